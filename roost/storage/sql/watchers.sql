-- Topic events and watches (roost.storage.watchers), by name. The layout is digests.sql's: a header
-- "-- name: <name>" per statement, "(sqlite)" / "(postgresql)" variants side by side.

-- name: fan_out (sqlite)
-- One notification per active watcher of the topic in the account, the actor left out, in one
-- statement. $1 the id prefix ("ntf_" and the time part of a new id), to which each row adds 64
-- random bits, so the ids keep the time order lists page by; $2 event kind, $3 topic, $4 actor,
-- $5 payload, $6 category, $7 email, $8 now, $9 watches taken part in since then are active,
-- $10 the actor's account.
INSERT INTO notifications (id, recipient_user_id, event_kind, topic, actor_user_id, payload, category, email,
                           created_at)
SELECT $1 || lower(hex(randomblob(8))), w.user_id, $2, $3, $4, $5, $6, $7, $8
FROM watches w JOIN users u ON u.id = w.user_id
WHERE w.topic = $3 AND w.last_participation_at >= $9 AND w.user_id <> $4 AND u.account_id = $10 AND u.active

-- name: fan_out (postgresql)
INSERT INTO notifications (id, recipient_user_id, event_kind, topic, actor_user_id, payload, category, email,
                           created_at)
SELECT $1::text || substr(md5(gen_random_uuid()::text), 1, 16), w.user_id, $2::text, $3::text, $4::text,
       $5::jsonb, $6::text, $7::boolean, $8::timestamptz
FROM watches w JOIN users u ON u.id = w.user_id
WHERE w.topic = $3::text AND w.last_participation_at >= $9::timestamptz AND w.user_id <> $4::text
  AND u.account_id = $10::text AND u.active

-- name: claim_key
-- Take an idempotency key for this event; no row back: the account used the key before.
-- $1 id, $2 account, $3 key, $4 topic, $5 request fingerprint, $6 now.
INSERT INTO topic_event_keys (id, account_id, idempotency_key, topic, fingerprint, created_at)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (account_id, idempotency_key) DO NOTHING
RETURNING id

-- name: get_key
SELECT id, topic, fingerprint, notified FROM topic_event_keys WHERE account_id = $1 AND idempotency_key = $2

-- name: settle_key
UPDATE topic_event_keys SET notified = $2 WHERE id = $1

-- name: prune_keys
DELETE FROM topic_event_keys WHERE created_at < $1

-- name: list_watches
-- A user's watches by topic; $2 the last topic of the previous page ('' for the first).
SELECT user_id, topic, created_at, last_participation_at FROM watches
WHERE user_id = $1 AND topic > $2 ORDER BY topic LIMIT $3

-- name: get_watch
SELECT user_id, topic, created_at, last_participation_at FROM watches WHERE user_id = $1 AND topic = $2

-- name: delete_watch
DELETE FROM watches WHERE user_id = $1 AND topic = $2
