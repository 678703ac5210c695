"""A round trip through a client generated from kvs's OpenAPI document.

Run by .ci/client.sh: `python roundtrip.py URL ADMIN_TOKEN CLIENT_DIR`, where
CLIENT_DIR holds the package openapi-python-client generated from
URL/v1/openapi.json. It uses the client as typed, as a user would: create a
project, put and get text, JSON and binary values with the content types it
chose, If-Match, list with a cursor, a transaction with a get, delete. Any
mismatch raises (and the script exits non-zero).
"""

import io
import json
import sys

url, admin_token, client_dir = sys.argv[1:4]
sys.path.insert(0, client_dir)

from kvs_http_api_client import AuthenticatedClient  # noqa: E402
from kvs_http_api_client.api.keys import (  # noqa: E402
    delete_key,
    get_key,
    list_keys,
    put_key,
)
from kvs_http_api_client.api.projects import create  # noqa: E402
from kvs_http_api_client.api.txn import txn  # noqa: E402
from kvs_http_api_client.models import (  # noqa: E402
    CreatedProject,
    Encoding,
    GetOp,
    KeyMeta,
    Listing,
    NewProject,
    PutOp,
    TxnAnswer,
    TxnGet,
    TxnGetResult,
    TxnPut,
    TxnPutResult,
    TxnRequest,
)
from kvs_http_api_client.types import File  # noqa: E402


def check(condition, what):
    if not condition:
        raise AssertionError(what)
    print("ok:", what)


admin = AuthenticatedClient(base_url=url, token=admin_token, raise_on_unexpected_status=True)
created = create.sync(client=admin, body=NewProject(id="roundtrip"))
check(isinstance(created, CreatedProject), f"the project is created: {created!r}")
client = AuthenticatedClient(
    base_url=url, token=created.token.secret, raise_on_unexpected_status=True
)
P = "roundtrip"


def put(key, payload, content_type=None, **kwargs):
    extra = {} if content_type is None else {"content_type": content_type}
    return put_key.sync_detailed(
        P, key, client=client, body=File(payload=io.BytesIO(payload)), **extra, **kwargs
    )


def get(key):
    answer = get_key.sync_detailed(P, key, client=client)
    check(answer.status_code == 200, f"GET {key} is 200 ({answer.status_code})")
    check(isinstance(answer.parsed, File), f"GET {key} is read as bytes")
    return answer.content, answer.headers["content-type"]


# Text, JSON and binary values, each with the content type the client chose.
values = {
    "greeting": (b"hello, world", "text/plain; charset=utf-8"),
    "config/app": (b'{"b":1,"a":2,"n":123456789012345678901234567890}', "application/json"),
    "blob": (bytes(range(256)), None),
}
versions = {}
for key, (payload, content_type) in values.items():
    answer = put(key, payload, content_type)
    check(answer.status_code == 201, f"PUT {key} creates it ({answer.status_code})")
    check(isinstance(answer.parsed, KeyMeta), f"PUT {key} answers KeyMeta")
    stored_type = content_type or "application/octet-stream"
    check(answer.parsed.content_type == stored_type, f"{key} is stored as {stored_type}")
    versions[key] = answer.parsed.version
    body, got_type = get(key)
    check(body == payload, f"GET {key} gives the bytes back")
    check(got_type == stored_type, f"GET {key} has Content-Type {stored_type}")

# If-Match: a write over the current version, then one over a stale version.
answer = put("greeting", b"hello again", "text/plain", if_match=f'"{versions["greeting"]}"')
check(answer.status_code == 200, f"If-Match on the current version writes ({answer.status_code})")
check(isinstance(answer.parsed, KeyMeta), "and answers KeyMeta")
answer = put("greeting", b"lost", "text/plain", if_match=f'"{versions["greeting"]}"')
check(answer.status_code == 412, f"If-Match on a stale version is 412 ({answer.status_code})")
check(get("greeting")[0] == b"hello again", "the stale write changed nothing")

# A listing in pages of 2, followed by its cursor.
for index in range(5):
    put(f"list/{index}", str(index).encode(), "text/plain")
seen, cursor, pages = [], None, 0
while True:
    extra = {} if cursor is None else {"cursor": cursor}
    page = list_keys.sync(P, client=client, prefix="list/", limit=2, **extra)
    check(isinstance(page, Listing), f"page {pages} is a Listing")
    seen += [key.key for key in page.keys]
    pages += 1
    cursor = page.cursor
    if cursor is None:
        break
check(seen == [f"list/{i}" for i in range(5)], f"the cursor walks every key once: {seen}")
check(pages == 3, f"in 3 pages of 2 ({pages})")

# A transaction with a put and a get, decoded by `op`.
answer = txn.sync(
    P,
    client=client,
    body=TxnRequest(
        ops=[
            TxnPut(op=PutOp.PUT, key="from-txn", value={"x": [1, 2]}),
            TxnGet(op=GetOp.GET, key="greeting"),
            TxnGet(op=GetOp.GET, key="absent"),
        ]
    ),
)
check(isinstance(answer, TxnAnswer), "the transaction answers TxnAnswer")
put_result, get_result, absent = answer.results
check(isinstance(put_result, TxnPutResult), f"the put's result is TxnPutResult: {put_result!r}")
check(isinstance(get_result, TxnGetResult), f"the get's result is TxnGetResult: {get_result!r}")
check(get_result.value == "hello again", "the get reads the value")
check(get_result.encoding == Encoding.UTF8, "as utf8")
check(absent is None, "a get of an absent key is None")
body, got_type = get("from-txn")
check(json.loads(body) == {"x": [1, 2]}, f"the txn's JSON value is stored: {body!r}")
check(got_type == "application/json", "as application/json")

# Delete, then the key is gone.
answer = delete_key.sync_detailed(P, "greeting", client=client)
check(answer.status_code == 204, f"DELETE is 204 ({answer.status_code})")
answer = get_key.sync_detailed(P, "greeting", client=client)
check(answer.status_code == 404, f"the deleted key is 404 ({answer.status_code})")
print("the generated client's round trip passed")
