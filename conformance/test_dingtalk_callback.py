"""DingTalk's HTTP event callbacks (reference §6) against the simulator's HTTP push: a subscriber
written from DingTalk's documented callback encryption (AES-256-CBC, 32-byte PKCS#7, SHA-1
signature) with pycryptodome, proven first on the official test vectors, then used to decrypt what
the simulator pushes and to answer the encrypted `success` the simulator must accept. A wrong
answer makes the simulator retry, as DingTalk does."""

import base64
import hashlib
import http.server
import json
import os
import queue
import secrets
import string
import struct
import subprocess
import sys
import threading
import time
import urllib.parse

import pytest
import requests
from Crypto.Cipher import AES

WAIT_S = 15


class CallbackCrypto:
    """DingTalk's callback encryption as documented (reference §6.2), byte-oriented."""

    def __init__(self, token: str, encoding_aes_key: str, owner_key: str):
        assert len(encoding_aes_key) == 43
        self.token = token
        self.key = base64.b64decode(encoding_aes_key + "=")
        self.owner_key = owner_key

    def signature(self, timestamp: str, nonce: str, encrypt: str) -> str:
        return hashlib.sha1("".join(sorted([self.token, timestamp, nonce, encrypt])).encode()).hexdigest()

    def encrypt(self, message: str, random16: bytes | None = None) -> str:
        if random16 is None:
            alphabet = string.ascii_letters + string.digits
            random16 = "".join(secrets.choice(alphabet) for _ in range(16)).encode()
        body = message.encode("utf-8")
        plain = random16 + struct.pack(">I", len(body)) + body + self.owner_key.encode("utf-8")
        pad = 32 - len(plain) % 32
        plain += bytes([pad]) * pad
        return base64.b64encode(AES.new(self.key, AES.MODE_CBC, self.key[:16]).encrypt(plain)).decode()

    def decrypt(self, encrypt: str) -> tuple[bytes, str]:
        plain = AES.new(self.key, AES.MODE_CBC, self.key[:16]).decrypt(base64.b64decode(encrypt))
        pad = plain[-1]
        assert 1 <= pad <= 32, pad
        plain = plain[:-pad]
        (length,) = struct.unpack(">I", plain[16:20])
        message = plain[20 : 20 + length].decode("utf-8")
        assert plain[20 + length :].decode("utf-8") == self.owner_key, "owner key mismatch"
        return plain[:16], message

    def reply(self, message: str = "success", python_sample: bool = False) -> dict:
        timestamp = str(int(time.time() * 1000))
        nonce = secrets.token_hex(8)
        encrypt = self.encrypt(message)
        if python_sample:
            # The official Python sample: seconds, and base64 wrapped at 76 columns (encodebytes),
            # signed with its newlines (reference §6.3, §6.6).
            timestamp = str(int(time.time()))
            encrypt = base64.encodebytes(base64.b64decode(encrypt)).decode()
        return {"msg_signature": self.signature(timestamp, nonce, encrypt), "timeStamp": timestamp,
                "nonce": nonce, "encrypt": encrypt}


def vectors(fixtures) -> list:
    return json.loads((fixtures / "dingtalk" / "callback_crypto_vectors.json").read_text())["vectors"]


def test_the_fixtures_own_verifier_passes(fixtures):
    # Run in place (never copied): it re-checks every vector with an independent implementation.
    folder = fixtures / "dingtalk"
    done = subprocess.run([sys.executable, "verify_vectors.py"], cwd=folder, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().splitlines()[-1] == "14 passed, 0 failed"


def test_this_implementation_matches_every_vector(fixtures):
    for v in vectors(fixtures):
        crypto = CallbackCrypto(v["token"], v["encoding_aes_key"], v["owner_key"])
        # Some samples wrap base64 at 76 columns; DingTalk's wire form is one line.
        encrypt = v["encrypt"].replace("\n", "")
        assert crypto.signature(v["timestamp"], v["nonce"], v["encrypt"]) == v["msg_signature"], v["id"]
        random16, message = crypto.decrypt(encrypt)
        assert random16 == v["random16"].encode() and message == v["plaintext"], v["id"]
        assert len(message.encode()) == v["plaintext_utf8_len"], v["id"]
        assert crypto.encrypt(v["plaintext"], v["random16"].encode()) == encrypt, v["id"]


class Subscriber:
    """A callback endpoint on a loopback port that decrypts each push and answers per `mode`."""

    def __init__(self, crypto: CallbackCrypto):
        self.crypto = crypto
        self.mode = "success"
        self.pushes = queue.Queue()
        subscriber = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                timestamp = query.get("timestamp") or query.get("timeStamp")
                signature = query.get("msg_signature") or query.get("signature")
                valid = subscriber.crypto.signature(timestamp, query["nonce"], body["encrypt"]) == signature
                _, message = subscriber.crypto.decrypt(body["encrypt"])
                subscriber.pushes.put({"query": query, "valid_signature": valid, "event": json.loads(message),
                                       "content_type": self.headers.get("Content-Type", "")})
                if subscriber.mode == "success":
                    answer = json.dumps(subscriber.crypto.reply("success")).encode()
                elif subscriber.mode == "python-sample":
                    answer = json.dumps(subscriber.crypto.reply("success", python_sample=True)).encode()
                elif subscriber.mode == "plain":
                    answer = b"success"
                else:  # a well-formed reply that says something else
                    answer = json.dumps(subscriber.crypto.reply("failure")).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/dingtalk/callback"

    def next(self) -> dict:
        return self.pushes.get(timeout=WAIT_S)

    def stop(self):
        self.server.shutdown()


@pytest.fixture(scope="module")
def subscriber(dingtalk):
    info = dingtalk.info()
    app = info["org"]["apps"][0]
    crypto = CallbackCrypto(info["callback"]["token"], info["callback"]["encoding_aes_key"], app["app_key"])
    sub = Subscriber(crypto)
    dingtalk.put_record("subscription", {"app_key": app["app_key"], "mode": "http", "url": sub.url})
    yield sub
    dingtalk.put_record("subscription", {"app_key": app["app_key"], "mode": "stream"})
    sub.stop()


def app_token(dingtalk) -> str:
    app = dingtalk.info()["org"]["apps"][0]
    return requests.post(dingtalk.url("/v1.0/oauth2/accessToken"),
                         json={"appKey": app["app_key"], "appSecret": app["app_secret"]}, timeout=10).json()[
        "accessToken"]


def start_instance(dingtalk, po: str) -> str:
    answer = requests.post(
        dingtalk.url("/v1.0/workflow/processInstances"),
        headers={"x-acs-dingtalk-access-token": app_token(dingtalk)},
        json={"originatorUserId": "staff0815", "processCode": "PROC-DB-PURCHASE-REQ",
              "formComponentValues": [{"name": "PO Number", "value": po}, {"name": "Amount (HKD)", "value": "10"}]},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["instanceId"]


def drain(sub: Subscriber, seconds: float = 0.5) -> list:
    """Waits `seconds`, then takes every push received so far."""
    time.sleep(seconds)
    taken = []
    while not sub.pushes.empty():
        taken.append(sub.pushes.get_nowait())
    return taken


def test_push_decrypts_and_success_is_accepted(dingtalk, subscriber, fixtures):
    subscriber.mode = "success"
    instance_id = start_instance(dingtalk, "PO-HTTP-1")
    push = subscriber.next()
    assert push["valid_signature"] and push["content_type"].startswith("application/json")
    event = push["event"]
    assert event["EventType"] in ("bpms_instance_change", "bpms_task_change")
    assert event["processInstanceId"] == instance_id
    assert event["corpId"] == dingtalk.info()["org"]["corp_id"]
    expected = json.loads((fixtures / "dingtalk" / "events" / "http_bpms_instance_change_start.json").read_text())
    if event["EventType"] == "bpms_instance_change":
        expected_keys = {k for k in expected if not k.startswith("_")}
        assert expected_keys <= set(event), expected_keys - set(event)
    # Accepted at the first attempt: the same event is not pushed again.
    later = drain(subscriber, 1.5)
    assert later, "the instance's other events arrive too"
    assert [p for p in later if p["event"] == event] == []


@pytest.mark.parametrize("mode", ["plain", "not-success"])
def test_a_wrong_answer_is_retried(dingtalk, subscriber, mode):
    drain(subscriber)
    subscriber.mode = mode
    instance_id = start_instance(dingtalk, f"PO-HTTP-{mode}")
    first = subscriber.next()
    assert first["event"]["processInstanceId"] == instance_id
    retry = subscriber.next()
    assert retry["event"] == first["event"]
    # Each attempt is signed afresh.
    assert retry["query"]["nonce"] != first["query"]["nonce"]
    subscriber.mode = "success"
    drain(subscriber, 2.0)


def test_the_python_samples_reply_form_is_accepted(dingtalk, subscriber):
    drain(subscriber)
    subscriber.mode = "python-sample"
    instance_id = start_instance(dingtalk, "PO-HTTP-pysample")
    first = subscriber.next()
    assert first["event"]["processInstanceId"] == instance_id
    later = drain(subscriber, 1.5)
    assert [p for p in later if p["event"] == first["event"]] == []
    subscriber.mode = "success"
