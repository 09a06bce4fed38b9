"""
amqpfix.py - RabbitMQ for the integration tests: finding the broker, its
management API, a private node to stop and start, and participants that
consume commands and reply (with pika, Debian's python3-pika).

The broker comes from DTX_TEST_AMQP_URL (AMQP) and DTX_TEST_AMQP_MGMT (its
management API, http://user:pass@host:port), as scripts/rabbitmq.sh prints
them; without them the tests are skipped (failed with DTX_REQUIRE_AMQP=1).
"""

import base64
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

from dtxtest import free_port, unavailable, wait_until

REPO = Path(__file__).resolve().parents[2]
RABBITMQ_SH = REPO / "scripts" / "rabbitmq.sh"


def require_amqp():
    """(url, management URL) of the shared broker: DTX_TEST_AMQP_URL and
    DTX_TEST_AMQP_MGMT; skips without them, fails with DTX_REQUIRE_AMQP=1."""
    url, mgmt = os.environ.get("DTX_TEST_AMQP_URL"), os.environ.get("DTX_TEST_AMQP_MGMT")
    if not url or not mgmt:
        unavailable("no RabbitMQ: set DTX_TEST_AMQP_URL and DTX_TEST_AMQP_MGMT "
                    "(scripts/rabbitmq.sh)", "DTX_REQUIRE_AMQP")
    return url, mgmt


class Mgmt:
    """RabbitMQ's management HTTP API, for the "/" vhost."""

    def __init__(self, base):
        u = urllib.parse.urlsplit(base)
        self.base = f"http://{u.hostname}:{u.port}"
        cred = f"{urllib.parse.unquote(u.username or 'guest')}:{urllib.parse.unquote(u.password or 'guest')}"
        self.auth = "Basic " + base64.b64encode(cred.encode()).decode()

    def call(self, method, path, body=None, timeout=10):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Authorization", self.auth)
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
        return json.loads(raw) if raw else None

    def queue(self, name):
        self.call("PUT", f"/api/queues/%2F/{urllib.parse.quote(name, safe='')}", {"durable": True})

    def exchange(self, name, kind="direct"):
        self.call("PUT", f"/api/exchanges/%2F/{urllib.parse.quote(name, safe='')}", {"type": kind, "durable": True})

    def bind(self, exchange, queue, key):
        e, q = urllib.parse.quote(exchange, safe=""), urllib.parse.quote(queue, safe="")
        self.call("POST", f"/api/bindings/%2F/e/{e}/q/{q}", {"routing_key": key})

    def user(self, name, password):
        self.call("PUT", f"/api/users/{name}", {"password": password, "tags": ""})
        self.call("PUT", f"/api/permissions/%2F/{name}", {"configure": ".*", "write": ".*", "read": ".*"})

    def take(self, name, count=1000):
        """Remove and return up to count messages of queue name, in order."""
        path = f"/api/queues/%2F/{urllib.parse.quote(name, safe='')}/get"
        return self.call("POST", path, {"count": count, "ackmode": "ack_requeue_false", "encoding": "auto"})

    def take_n(self, name, n, timeout=20):
        """Take messages of queue name until there are at least n (the
        queue's statistics lag: read the messages themselves); then wait a
        moment for stragglers (duplicates) and take those too."""
        got = []

        def enough():
            got.extend(self.take(name))
            return len(got) >= n

        wait_until(enough, timeout, interval=0.2, what=f"{n} messages in {name}")
        time.sleep(0.3)
        got.extend(self.take(name))
        return got


@pytest.fixture
def broker():
    url, mgmt = require_amqp()
    return url, Mgmt(mgmt)


def uid(prefix):
    return f"dtx-{prefix}-{uuid.uuid4().hex[:8]}"


class PrivateBroker:
    """A RabbitMQ node of this test's own (scripts/rabbitmq.sh), to stop and
    start. Its directory is under /tmp: the rabbitmq user must reach it."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="dtx-test-rmq-", dir="/tmp")
        self.port = free_port()
        self.url = self.mgmt = self.mgmt_url = None

    def start(self):
        out = subprocess.run([str(RABBITMQ_SH), "start", self.dir, str(self.port)],
                             capture_output=True, text=True, timeout=180)
        assert out.returncode == 0, out.stderr[-3000:]
        env = dict(line.split("=", 1) for line in out.stdout.split() if "=" in line)
        self.url, self.mgmt_url = env["DTX_TEST_AMQP_URL"], env["DTX_TEST_AMQP_MGMT"]
        self.mgmt = Mgmt(self.mgmt_url)

    def stop(self):
        subprocess.run([str(RABBITMQ_SH), "stop", self.dir], capture_output=True, timeout=180)

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def private_broker():
    require_amqp()
    if not os.access(RABBITMQ_SH, os.X_OK) or shutil.which("python3") is None:
        pytest.skip("scripts/rabbitmq.sh not runnable")
    b = PrivateBroker()
    try:
        b.start()
        yield b
    finally:
        b.cleanup()




class Command:
    """A command as a participant received it."""

    def __init__(self, method, props, body):
        self.routing_key = method.routing_key
        self.redelivered = method.redelivered
        self.message_id = props.message_id
        self.correlation_id = props.correlation_id
        self.reply_to = props.reply_to
        self.delivery_mode = props.delivery_mode
        self.headers = dict(props.headers or {})
        self.body = body
        self.arrived = time.monotonic()

    @property
    def op(self):
        return self.headers.get("Dtx-Op")

    @property
    def gid(self):
        return self.headers.get("Dtx-Gid")

    def json(self):
        return json.loads(self.body) if self.body else None

    def __repr__(self):
        return f"<Command {self.message_id} corr={self.correlation_id}>"


class AmqpParticipant:
    """A participant consuming one queue in a thread of its own, with pika.

    decide(cmd) returns the reply: "SUCCESS", "FAILURE", "ONGOING", any
    other string (sent as Dtx-Result as it is), None for no reply, or a
    (result, body, delay_s) tuple. Every command received is in .calls.
    """

    def __init__(self, url, queue, decide=lambda cmd: "SUCCESS"):
        import pika

        self.pika = pika
        self.url, self.queue, self.decide = url, queue, decide
        self.calls = []
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.conn = self.ch = None
        self.error = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        if not self.ready.wait(15):
            raise RuntimeError(f"participant on {queue} did not start: {self.error}")

    def _run(self):
        pika = self.pika
        try:
            self.conn = pika.BlockingConnection(pika.URLParameters(self.url))
            ch = self.ch = self.conn.channel()
            ch.queue_declare(self.queue, durable=True)
            ch.basic_consume(self.queue, self._on_message)
            self.ready.set()
            ch.start_consuming()
        except Exception as e:  # reported through .error / ready
            self.error = e
            self.ready.set()
        finally:
            try:
                if self.conn is not None and self.conn.is_open:
                    self.conn.close()
            except Exception:
                pass

    def _on_message(self, ch, method, props, body):
        cmd = Command(method, props, body)
        with self.lock:
            self.calls.append(cmd)
        answer = self.decide(cmd)
        result, text, delay = answer, b"", 0
        if isinstance(answer, tuple):
            result, text, delay = answer
        if delay:
            time.sleep(delay)
        if result is not None and cmd.reply_to:
            ch.basic_publish(
                exchange="",
                routing_key=cmd.reply_to,
                properties=self.pika.BasicProperties(
                    correlation_id=cmd.correlation_id,
                    headers={"Dtx-Result": result} if result else {},
                    delivery_mode=2,
                ),
                body=text if isinstance(text, bytes) else str(text).encode(),
            )
        ch.basic_ack(method.delivery_tag)

    def ops(self, gid=None):
        with self.lock:
            return [(c.headers.get("Dtx-Branch"), c.op) for c in self.calls if gid is None or c.gid == gid]

    def stop(self):
        """Stop consuming and close the connection (unacked commands go back
        to the queue)."""
        if self.conn is not None and self.thread.is_alive():
            try:
                self.conn.add_callback_threadsafe(self.ch.stop_consuming)
            except Exception:
                pass
        self.thread.join(10)


@pytest.fixture
def amqp_participants(broker):
    """Make participants on the shared broker: make(queue, decide)."""
    made = []

    def make(queue, decide=lambda cmd: "SUCCESS"):
        p = AmqpParticipant(broker[0], queue, decide)
        made.append(p)
        return p

    yield make
    for p in made:
        p.stop()
