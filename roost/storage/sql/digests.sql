-- The digest statements (roost.storage.digests), by name.
--
-- A header "-- name: <name>" starts a statement shared by both backends; where the backends need
-- different statements, "-- name: <name> (sqlite)" and "-- name: <name> (postgresql)" sit side
-- by side, as the per-dialect migrations do. Comment lines right under a header describe it.
-- Placeholders are $1, $2 on both backends. A list travels as one parameter: a PostgreSQL array,
-- or on SQLite JSON read back with json_each. "{name}" in a statement stands for the shared
-- statement "name" (a part written once: digest_user).

-- name: reschedule
INSERT INTO digest_schedule (user_id, next_at) VALUES ($1, $2)
ON CONFLICT (user_id) DO UPDATE SET next_at = excluded.next_at

-- name: digest_user
-- A part of due_users, due_users_after and scheduled_user (``{digest_user}``), not run alone: a user
-- with a digest schedule as a tick reads them; $1 the most unread notifications counted
-- (unread_total: everything unread in the user's inbox, up to $1).
SELECT u.id, u.email, u.display_name, u.timezone, u.quiet_hours, u.active, u.digest_cadence,
       u.digest_time, u.digest_weekday, s.next_at AS digest_next_at, s.last_at AS digest_last_at,
       COALESCE((SELECT e.epoch FROM unsubscribe_epochs e WHERE e.user_id = u.id), 0) AS unsubscribe_epoch,
       (SELECT count(*) FROM (SELECT 1 FROM notifications n WHERE n.recipient_user_id = u.id AND n.read_at IS NULL
                              LIMIT $1) AS unread) AS unread_total
FROM digest_schedule s JOIN users u ON u.id = s.user_id

-- name: due_users
-- The first batch of users whose slot has come: $1 the unread count's cap, $2 now, $3 the batch size.
{digest_user}
WHERE s.next_at <= $2
ORDER BY s.next_at, s.user_id LIMIT $3

-- name: due_users_after
-- The next batch: $4, $5 are the (next_at, user id) of the last batch's final user.
{digest_user}
WHERE s.next_at <= $2 AND (s.next_at, s.user_id) > ($4, $5)
ORDER BY s.next_at, s.user_id LIMIT $3

-- name: eligible_notifications (sqlite)
-- $1 user ids (JSON), $2 now, $3 lookback start, $4 the personal-direct category.
SELECT n.id, n.recipient_user_id, n.event_kind, n.topic, n.read_at, a.display_name AS actor_name,
       COALESCE(NULLIF(json_extract(n.payload, '$.summary'), ''),
                NULLIF(json_extract(n.payload, '$.title'), '')) AS headline,
       CAST(n.payload AS TEXT) AS payload_json
FROM notifications n JOIN digest_schedule s ON s.user_id = n.recipient_user_id
LEFT JOIN users a ON a.id = n.actor_user_id
WHERE n.recipient_user_id IN (SELECT value FROM json_each($1))
  AND n.read_at IS NULL AND n.email_sent_at IS NULL AND n.digest_included_at IS NULL
  AND (n.category IS NULL OR n.category <> $4) AND n.created_at <= $2
  AND (n.created_at > $3 AND (s.last_at IS NULL OR n.created_at > s.last_at)
       OR n.carry_over)  -- the notification of a failed mail, whatever its period
ORDER BY n.recipient_user_id, n.created_at, n.id

-- name: eligible_notifications (postgresql)
-- One index range per user (recipient, created_at), already in order: no sort of the whole
-- batch's rows (which spills to disk at 50,000 rows).
SELECT n.id, n.recipient_user_id, n.event_kind, n.topic, n.read_at, a.display_name AS actor_name,
       COALESCE(NULLIF(n.payload ->> 'summary', ''), NULLIF(n.payload ->> 'title', '')) AS headline,
       CAST(n.payload AS TEXT) AS payload_json
FROM unnest($1::text[]) WITH ORDINALITY AS b(user_id, ord)
JOIN digest_schedule s ON s.user_id = b.user_id
CROSS JOIN LATERAL (
  SELECT * FROM notifications n
  WHERE n.recipient_user_id = b.user_id
    AND n.read_at IS NULL AND n.email_sent_at IS NULL AND n.digest_included_at IS NULL
    AND (n.category IS NULL OR n.category <> $4) AND n.created_at <= $2
    AND n.created_at > GREATEST($3, s.last_at)
  UNION ALL  -- the notification of a failed mail whose period has passed (a partial index finds them)
  SELECT * FROM notifications n
  WHERE n.recipient_user_id = b.user_id AND n.carry_over
    AND n.read_at IS NULL AND n.email_sent_at IS NULL AND n.digest_included_at IS NULL
    AND n.created_at <= $2 AND n.created_at <= GREATEST($3, s.last_at)
) AS n
LEFT JOIN users a ON a.id = n.actor_user_id
ORDER BY b.ord, n.created_at, n.id

-- name: watched_topics (sqlite)
-- Which topics each user of the batch ($1, JSON) watches: the digest shows those first.
SELECT user_id, topic FROM watches WHERE user_id IN (SELECT value FROM json_each($1))

-- name: watched_topics (postgresql)
SELECT user_id, topic FROM watches WHERE user_id = ANY($1::text[])

-- name: claim_slots (sqlite)
-- $1 one JSON array of [user_id, slot_at, next_at] triples (json_each is not indexed, so joining
-- three parallel arrays on their keys would cost n^2), $2 now.
UPDATE digest_schedule SET next_at = v.next_at, last_at = $2
FROM (SELECT json_extract(value, '$[0]') AS id, json_extract(value, '$[1]') AS slot_at,
             json_extract(value, '$[2]') AS next_at
      FROM json_each($1)) AS v
WHERE digest_schedule.user_id = v.id AND digest_schedule.next_at = v.slot_at
RETURNING digest_schedule.user_id

-- name: claim_slots (postgresql)
-- $1 user ids, $2 the slots being served, $3 the next slots, $4 now.
UPDATE digest_schedule AS s SET next_at = v.next_at, last_at = $4
FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[]) AS v(id, slot_at, next_at)
WHERE s.user_id = v.id AND s.next_at = v.slot_at
RETURNING s.user_id

-- name: record_digest (sqlite)
-- One execution per digest: $1 id, $2 user, $3 slot, $4 period start, $5 now, $6 ids, $7 outbox id.
INSERT INTO digests (id, recipient_user_id, slot_at, period_start, period_end, notification_ids,
                     outbox_id, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $5)

-- name: record_digest (postgresql)
-- One statement from arrays ($6: each digest's notification ids as JSON text), $5 now.
INSERT INTO digests (id, recipient_user_id, slot_at, period_start, period_end, notification_ids,
                     outbox_id, created_at)
SELECT v.id, v.user_id, v.slot_at, v.period_start, $5, v.ids::jsonb, v.outbox_id, $5
FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[], $6::text[], $7::text[])
  AS v(id, user_id, slot_at, period_start, ids, outbox_id)

-- name: mark_included (sqlite)
UPDATE notifications SET digest_included_at = $1 WHERE id IN (SELECT value FROM json_each($2))

-- name: mark_included (postgresql)
UPDATE notifications SET digest_included_at = $1 WHERE id = ANY($2::text[])

-- name: list_for_user
SELECT * FROM digests WHERE recipient_user_id = $1 ORDER BY period_end, id

-- name: schedule_of
SELECT next_at, last_at FROM digest_schedule WHERE user_id = $1

-- name: digest_settings
SELECT digest_cadence, digest_time, digest_weekday, timezone FROM users WHERE id = $1

-- name: unsubscribe
-- $1 user, $2 now.
UPDATE users SET digest_cadence = 'off', updated_at = $2 WHERE id = $1

-- name: unsubscribe_in_epoch
-- $1 user, $2 now, $3 the epoch the link was signed in: a link from before a re-subscribe does nothing.
UPDATE users SET digest_cadence = 'off', updated_at = $2
WHERE id = $1 AND COALESCE((SELECT epoch FROM unsubscribe_epochs WHERE user_id = $1), 0) = $3

-- name: unschedule
UPDATE digest_schedule SET next_at = NULL WHERE user_id = $1

-- name: unsubscribe_epoch
-- 0 until the user's digest is first turned back on; no row: no such user.
SELECT COALESCE((SELECT epoch FROM unsubscribe_epochs WHERE user_id = $1), 0) AS epoch FROM users WHERE id = $1

-- name: bump_unsubscribe_epoch
INSERT INTO unsubscribe_epochs (user_id, epoch) VALUES ($1, 1)
ON CONFLICT (user_id) DO UPDATE SET epoch = unsubscribe_epochs.epoch + 1

-- name: make_secret
-- $1 name, $2 a fresh value, $3 now: the first process to ask makes it.
INSERT INTO app_secrets (name, value, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING

-- name: secret
SELECT value FROM app_secrets WHERE name = $1

-- name: upcoming
-- The console's next digests: $1 the page size (plus one), soonest first.
SELECT u.id, u.email, u.display_name, u.timezone, u.active, u.digest_cadence, u.digest_time, u.digest_weekday,
       s.next_at, s.last_at
FROM digest_schedule s JOIN users u ON u.id = s.user_id
WHERE s.next_at IS NOT NULL
ORDER BY s.next_at, s.user_id LIMIT $1

-- name: upcoming_after
-- The next page: $2, $3 the (next_at, user id) of the previous page's last row.
SELECT u.id, u.email, u.display_name, u.timezone, u.active, u.digest_cadence, u.digest_time, u.digest_weekday,
       s.next_at, s.last_at
FROM digest_schedule s JOIN users u ON u.id = s.user_id
WHERE s.next_at IS NOT NULL AND (s.next_at, s.user_id) > ($2, $3)
ORDER BY s.next_at, s.user_id LIMIT $1

-- name: scheduled_user
-- One user as due_users reads them ($1 the unread count's cap, $2 user), whenever their slot is: a preview.
{digest_user}
WHERE u.id = $2 AND s.next_at IS NOT NULL
