"""A watch read with a real SSE library (httpx-sse), as a consumer would.

Run by .ci/client.sh: `python sse.py URL ADMIN_TOKEN`. Every event's data
must parse as JSON (the `retry` field travels with the first event, so it is
never an empty message), the replay ends in `sync`, a live write arrives, and
a `since` or `Last-Event-ID` beyond the server's revision is 400
`revision_in_future`. Any mismatch raises.
"""

import json
import sys

import httpx
from httpx_sse import connect_sse

url, admin_token = sys.argv[1:3]


def check(condition, what):
    if not condition:
        raise AssertionError(what)
    print("ok:", what)


admin = httpx.Client(
    base_url=url, headers={"Authorization": f"Bearer {admin_token}"}, timeout=10
)
created = admin.post("/v1/projects", json={"id": "sse"})
check(created.status_code == 201, f"the project is created ({created.status_code})")
token = created.json()["token"]["secret"]
client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
stored = {
    "a": (b'{"n":123456789012345678901234567890,"b":1,"a":2}', "application/json"),
    "b": (b"text with\nlines", "text/plain"),
    "c": (b"\xff\x00", "application/octet-stream"),
    "d": (b'{\n  "pretty": true\n}', "application/json"),
}
for key, (value, content_type) in stored.items():
    answer = client.put(f"/v1/projects/sse/kv/{key}", content=value,
                        headers={"Content-Type": content_type})
    check(answer.status_code == 201, f"PUT {key} ({answer.status_code})")
revision = answer.json()["version"]

events = []
with connect_sse(client, "GET", "/v1/projects/sse/watch",
                 params={"since": 0, "values": "true"}) as source:
    check(source.response.status_code == 200, "the watch opens")
    for index, event in enumerate(source.iter_sse()):
        check(event.data != "", f"event {index} ({event.event}) has data")
        data = json.loads(event.data)
        if index == 0:
            check(event.retry == 2000, f"the first event carries retry: 2000 ({event.retry})")
        events.append((event.event, data))
        if event.event == "sync":
            check(data["revision"] >= revision, f"sync at the revision written ({data})")
            live = client.put("/v1/projects/sse/kv/live", content=b"1",
                              headers={"Content-Type": "text/plain"})
            check(live.status_code == 201, "a live write")
        if event.event == "put" and data["key"] == "live":
            break

puts = {data["key"]: data for name, data in events if name == "put"}
check(set(puts) == set(stored) | {"live"}, f"every put came: {sorted(puts)}")
check(puts["a"]["value"] == json.loads(stored["a"][0]) and puts["a"]["encoding"] == "json",
      "a JSON value comes as JSON")
check(puts["d"]["value"] == {"pretty": True}, "a JSON value with line breaks comes whole")
check(puts["b"]["value"] == "text with\nlines" and puts["b"]["encoding"] == "utf8",
      "a text value comes as text")
check(puts["c"]["encoding"] == "base64", "bytes come as base64")

future = revision + 1000
answer = client.get("/v1/projects/sse/watch", params={"since": future})
check(answer.status_code == 400 and answer.json()["error"]["code"] == "revision_in_future",
      f"since beyond the revision is 400 revision_in_future ({answer.status_code} {answer.text})")
answer = client.get("/v1/projects/sse/watch", headers={"Last-Event-ID": str(future)})
check(answer.status_code == 400 and answer.json()["error"]["code"] == "revision_in_future",
      f"Last-Event-ID beyond the revision is 400 revision_in_future ({answer.status_code})")
print("the SSE checks passed")
