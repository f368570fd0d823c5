"""A hostile task reads every credential its pod holds and turns it against another task's Redis
keys: each attempt's Redis user may touch only its own keys, so every try is refused, and the victim
ends with its own result on attempt 1.

The attacker is told the victim's full key prefix (a guess it could not make: the prefix carries the
victim's uid), the strongest case. It speaks RESP over a socket (Python) or /dev/tcp (bash), so it
needs no client library.
"""

from __future__ import annotations

import json
import time

import pytest
import redis
from kubernetes import client

from tests.e2e.tasks import codetask, create, get, wait_for

VICTIM_CODE = "import time\ntime.sleep(20)\nprint('victim-ok')\n"

PYTHON_ATTACKER = r"""
import json, os, socket
from urllib.parse import unquote, urlsplit

urls = set()
for pid in os.listdir("/proc"):
    if pid.isdigit():
        try:
            environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        urls |= {v[len(b"REDIS_URL="):].decode() for v in environ if v.startswith(b"REDIS_URL=")}

def call(sock, *args):
    sock.sendall(f"*{len(args)}\r\n".encode() + b"".join(
        f"${len(a.encode())}\r\n{a}\r\n".encode() for a in args))
    return sock.recv(65536).split(b"\r\n")[0].decode()

victim = os.environ["VICTIM_PREFIX"]
report = {"urls": len(urls)}
for url in urls:
    u = urlsplit(url)
    s = socket.create_connection((u.hostname, u.port), timeout=3)
    report["AUTH own"] = call(s, "AUTH", unquote(u.username), unquote(u.password))
    report["KEYS"] = call(s, "KEYS", "*")
    report["SCAN"] = call(s, "SCAN", "0")
    report["GET victim result"] = call(s, "GET", victim + ":result")
    report["SET victim result"] = call(s, "SET", victim + ":result", "forged")
    report["SETEX victim heartbeat"] = call(s, "SETEX", victim + ":heartbeat", "1", "x")
    report["DEL victim heartbeat"] = call(s, "DEL", victim + ":heartbeat")
    report["HSET victim runner"] = call(s, "HSET", victim + ":runner", "pid", "1")
    report["XADD results stream"] = call(s, "XADD", "codetask:results:stream", "*", "uid", "x")
    marker = "codetask:published:" + victim.split(":")[3]
    report["SET victim published marker"] = call(s, "SET", marker, "1")
    report["ACL LIST"] = call(s, "ACL", "LIST")
    bare = socket.create_connection((u.hostname, u.port), timeout=3)
    report["GET victim result, no AUTH"] = call(bare, "GET", victim + ":result")
    report["AUTH default, no password"] = call(bare, "AUTH", "default", "")
print(json.dumps(report))
"""

BASH_ATTACKER = r"""
urls=$(for f in /proc/[0-9]*/environ; do
  tr '\0' '\n' < "$f" 2>/dev/null | sed -n 's/^REDIS_URL=//p'
done | sort -u)
echo "urls $(printf '%s\n' "$urls" | grep -c .)"
send() {
  local out="*$#\r\n" a line
  for a in "$@"; do out+="\$${#a}\r\n$a\r\n"; done
  printf '%b' "$out" >&3
  IFS= read -r -t 3 line <&3
  echo "$1 ${line%$'\r'}"
}
re='^redis://([^:]*):([^@]*)@([^:/]*):([0-9]+)'
for url in $urls; do
  [[ $url =~ $re ]] || continue
  exec 3<>"/dev/tcp/${BASH_REMATCH[3]}/${BASH_REMATCH[4]}"
  send AUTH "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"
  send KEYS '*'
  send SET "$VICTIM_PREFIX:result" forged
  send DEL "$VICTIM_PREFIX:heartbeat"
  send FLUSHALL
done
"""


def victim_prefix(admin: redis.Redis, ns: str) -> str:
    """The victim's attempt-1 key prefix, once its runner beat (read with the admin credential)."""
    end = time.monotonic() + 30
    while time.monotonic() < end:
        keys = admin.keys(f"codetask:{ns}:victim:*:1:heartbeat")
        if keys:
            key = keys[0].decode() if isinstance(keys[0], bytes) else keys[0]
            return key.rsplit(":", 1)[0]
        time.sleep(0.2)
    raise AssertionError("the victim never beat")


@pytest.mark.timeout(180)
def test_a_hostile_task_cannot_touch_another_tasks_redis_keys(
    api_client: client.ApiClient, redis_operator: str, redis_url: str
) -> None:
    ns = redis_operator
    admin = redis.Redis.from_url(redis_url)
    create(api_client, ns, codetask("victim", language="python", code=VICTIM_CODE))
    wait_for(api_client, ns, "victim", {"Running"}, timeout=60)
    prefix = victim_prefix(admin, ns)
    env = [{"name": "VICTIM_PREFIX", "value": prefix}]
    create(api_client, ns, codetask("py", language="python", code=PYTHON_ATTACKER, env=env))
    create(api_client, ns, codetask("sh", language="bash", code=BASH_ATTACKER, env=env))

    py = wait_for(api_client, ns, "py", timeout=60)["status"]
    assert py["phase"] == "Succeeded", py
    report = json.loads(py["stdout"])
    assert report.pop("urls") == 1, report  # its own credential: the probe found it
    assert report.pop("AUTH own") == "+OK"
    assert all(answer.startswith("-") for answer in report.values()), report

    sh = wait_for(api_client, ns, "sh", timeout=60)["status"]
    lines = dict(line.split(" ", 1) for line in sh["stdout"].splitlines())
    assert lines.pop("urls") == "1", sh["stdout"]
    assert lines.pop("AUTH") == "+OK", sh["stdout"]
    assert set(lines) == {"KEYS", "SET", "DEL", "FLUSHALL"}, sh["stdout"]
    assert all(answer.startswith("-") for answer in lines.values()), sh["stdout"]

    victim = wait_for(api_client, ns, "victim", timeout=60)["status"]
    assert (victim["phase"], victim["attempts"], victim["stdout"]) == (
        "Succeeded",
        1,
        "victim-ok\n",
    )
    assert "history" not in victim
    stored = json.loads(admin.get(f"{prefix}:result") or b"{}")
    assert stored.get("stdout") == "victim-ok\n"
    assert admin.dbsize() > 0  # FLUSHALL was refused
    assert get(api_client, ns, "victim")["status"]["reason"] == "Completed"
