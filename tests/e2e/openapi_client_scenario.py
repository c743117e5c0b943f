"""What an app does with a client generated from /openapi.json by ``openapi-python-client``.

Run by tests/e2e/test_openapi_client.py in its own process, with the generated package
(``roost_api_client``) on ``PYTHONPATH``: ``python openapi_client_scenario.py URL SERVICE_TOKEN``.
Every call goes through the generated client and its models; a failed step raises.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from roost_api_client import AuthenticatedClient
from roost_api_client.api.device import get_device_me, post_send_result, take_pending_sends
from roost_api_client.api.dispatch import create_batch, get_batch, list_batch_items, send_batch
from roost_api_client.api.scouts import create_scout, list_scout_items, push_scout_items
from roost_api_client.api.tenancy import (
    create_account,
    create_device,
    create_user,
    get_account,
    list_accounts,
    list_users,
)
from roost_api_client.models import (
    Account,
    AccountCreate,
    AccountPage,
    Batch,
    BatchCreate,
    BatchItemIn,
    BatchItemPage,
    BatchWithNextSend,
    DeviceCreate,
    DeviceCreated,
    DeviceMe,
    ErrorBody,
    PushAccepted,
    PushBody,
    PushItem,
    Scout,
    ScoutCreate,
    ScoutCreateProvider,
    ScoutItemPage,
    SendQueue,
    SendResult,
    SendResultIn,
    SendResultInStatus,
    TimeZone,
    User,
    UserCreate,
    UserPage,
)


def ok(response: Any, status: int, model: type) -> Any:
    """The parsed body of a response that must have ``status`` and parse as ``model``."""
    assert response.status_code == status, (response.status_code, response.content)
    assert isinstance(response.parsed, model), response.parsed
    return response.parsed


def main(url: str, service_token: str) -> None:
    service = AuthenticatedClient(base_url=url, token=service_token, raise_on_unexpected_status=True)

    account = ok(create_account.sync_detailed(client=service, body=AccountCreate(
        name="Generated", timezone=TimeZone.EUROPE_BERLIN)), 201, Account)
    assert ok(get_account.sync_detailed(account.id, client=service), 200, Account).timezone == "Europe/Berlin"
    accounts = ok(list_accounts.sync_detailed(client=service, name="Generated"), 200, AccountPage)
    assert [a.id for a in accounts.items] == [account.id], accounts
    missing = get_account.sync_detailed("acc_nope", client=service)
    assert missing.status_code == 404 and isinstance(missing.parsed, ErrorBody), missing
    assert missing.parsed.error.code == "not_found", missing.parsed

    user = ok(create_user.sync_detailed(client=service, body=UserCreate(
        account_id=account.id, email="gen@example.com", display_name="Gen")), 201, User)
    listed = ok(list_users.sync_detailed(client=service, account_id=account.id), 200, UserPage)
    assert [u.id for u in listed.items] == [user.id]
    device = ok(create_device.sync_detailed(client=service, body=DeviceCreate(user_id=user.id, name="phone")),
                201, DeviceCreated)

    scout = ok(create_scout.sync_detailed(client=service, body=ScoutCreate(
        user_id=user.id, provider=ScoutCreateProvider.PUSH)), 201, Scout)
    pushed = ok(push_scout_items.sync_detailed(scout.id, client=service, body=PushBody(items=[PushItem(
        source_msg_ref="msg-1", subject="Invoice overdue", sender="ap@example.com", body="Please pay.")])),
        202, PushAccepted)
    assert pushed.accepted == 1
    items = ok(list_scout_items.sync_detailed(scout.id, client=service), 200, ScoutItemPage)
    assert [item.source_msg_ref for item in items.items] == ["msg-1"], items

    batch = ok(create_batch.sync_detailed(client=service, body=BatchCreate(
        account_id=account.id, created_by=user.id,
        items=[BatchItemIn(to_handle="+15550100", body="hello", device_id=device.id)])), 201, Batch)
    ok(send_batch.sync_detailed(batch.id, client=service), 200, Batch)

    phone = AuthenticatedClient(base_url=url, token=device.token, raise_on_unexpected_status=True)
    assert ok(get_device_me.sync_detailed(client=phone), 200, DeviceMe).device_id == device.id
    queue = ok(take_pending_sends.sync_detailed(client=phone), 200, SendQueue)
    assert [(i.to_handle, i.body) for i in queue.items] == [("+15550100", "hello")], queue
    result = ok(post_send_result.sync_detailed(queue.items[0].id, client=phone,
                                               body=SendResultIn(status=SendResultInStatus.SENT)), 200, SendResult)
    assert result.status == "sent"

    deadline = time.monotonic() + 10
    while (final := ok(get_batch.sync_detailed(batch.id, client=service), 200, BatchWithNextSend)).status != "done":
        assert time.monotonic() < deadline, final
        time.sleep(0.1)
    assert final.counts.sent == 1, final.counts
    listed_items = ok(list_batch_items.sync_detailed(batch.id, client=service), 200, BatchItemPage)
    assert [i.status for i in listed_items.items] == ["sent"], listed_items
    print("scenario ok")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
