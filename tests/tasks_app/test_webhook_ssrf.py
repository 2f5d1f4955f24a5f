"""Webhook targets on private, loopback, link-local, metadata and other non-public addresses are
refused at config creation (400) and at every delivery attempt, without any connection; the
connection goes to the address that was checked (one resolution), with the original Host and
TLS server name."""
import datetime
import ipaddress
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tasks_app.models import Event, User, WebhookAttempt, WebhookConfig, WebhookDelivery
from tasks_app.sealing import seal
from tasks_app.services import webhooks
from tasks_app.services.sessions import create_session
from tasks_app.webhook_targets import Refused, address_refusal, parse, resolve
from workers.publishers import webhooks as publisher

from ..receiver import Receiver

pytestmark = pytest.mark.django_db

PUBLIC = "93.184.216.34"
REAL_GETADDRINFO = socket.getaddrinfo


@pytest.fixture
def names(monkeypatch):
    """A resolver for test names (`names["x.example.test"] = ["127.0.0.1"]`), counting lookups;
    other names resolve as usual."""

    class Names(dict):
        lookups: list = []

    table = Names()
    table.lookups = []

    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
        if isinstance(host, str) and host in table:
            table.lookups.append(host)
            answer = table[host]
            if isinstance(answer, Exception):
                raise answer
            return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                     (a, port or 0, 0, 0) if ":" in a else (a, port or 0)) for a in answer]
        return REAL_GETADDRINFO(host, port, family, type, proto, flags)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return table


@pytest.fixture
def listener():
    """A socket listening on loopback that must see no connection."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.setblocking(False)
    yield sock
    sock.close()


def connections_seen(sock) -> int:
    seen = 0
    while True:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            return seen
        conn.close()
        seen += 1


@pytest.fixture
def no_connections(monkeypatch):
    """Every outgoing connect() in this process is recorded and refused."""
    attempts = []

    def connect(self, address):
        attempts.append(address)
        raise AssertionError(f"a connection was attempted to {address}")

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect)
    return attempts


def refused_corpus(port: int) -> list[str]:
    return [
        # What urlsplit reads as host 1.1.1.1 and urllib3 as 127.0.0.1.
        f"http://127.0.0.1:{port}\\@1.1.1.1/hook",
        f"http://1.1.1.1\\@127.0.0.1:{port}/hook",
        # IPv6 forms that embed a loopback IPv4 address.
        f"http://[::127.0.0.1]:{port}/hook",          # IPv4-compatible
        f"http://[::ffff:127.0.0.1]:{port}/hook",     # IPv4-mapped
        f"http://[::ffff:7f00:1]:{port}/hook",
        f"http://[64:ff9b::7f00:1]:{port}/hook",      # NAT64
        f"http://[64:ff9b:1::7f00:1]:{port}/hook",    # local-use NAT64
        f"http://[2002:7f00:1::1]:{port}/hook",       # 6to4
        "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/hook",  # Teredo
        # Other spellings of 127.0.0.1.
        f"http://2130706433:{port}/",
        f"http://0177.0.0.1:{port}/",
        f"http://0x7f000001:{port}/",
        f"http://0x7f.0.0.1:{port}/",
        f"http://127.1:{port}/",
        f"http://127.0.1:{port}/",
        f"http://127.0.0.1:{port}/",
        f"http://localhost:{port}/",
        f"http://LOCALHOST:{port}/",
        f"http://[::1]:{port}/",
        # Unspecified addresses reach the local host.
        f"http://0.0.0.0:{port}/",
        f"http://0:{port}/",
        f"http://[::]:{port}/",
        # Link-local, metadata, shared, private, special-purpose, documentation, multicast.
        f"http://[fe80::1]:{port}/",
        f"http://[fe80::1%25lo]:{port}/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://100.100.100.200/latest/meta-data/",
        "http://168.63.129.16/machine",
        "http://192.0.0.192/opc/v2/instance/",
        "http://192.0.0.9/hook",
        "http://100.64.0.1/",
        "http://10.0.0.1/",
        "http://172.16.0.1/",
        "http://192.168.1.1/",
        "http://[fc00::1]/",
        "http://198.18.0.1/",
        "http://192.0.2.1/",
        "http://198.51.100.1/",
        "http://203.0.113.1/",
        "http://[2001:db8::1]/",
        "http://[2001:2::1]/",
        "http://224.0.0.1/",
        "http://255.255.255.255/",
        "http://[ff02::1]/",
        # Credentials, fragments, whitespace, non-ASCII: refused whatever the host.
        "http://user:secret@example.com/hook",
        f"http://example.com@127.0.0.1:{port}/hook",
        f"http://127.0.0.1:{port}#@example.com/hook",
        f"http://127.0.0.1:{port} /hook",
        f"http://127.0.0.1:{port}/ho\tok",
        "http://exämple.com/hook",
        "http://example.com:/hook",
        "http://example.com:99999/hook",
        "http:///hook",
        "ftp://example.com/hook",
    ]


class TestRefused:
    @pytest.mark.parametrize("index", range(len(refused_corpus(1))))
    def test_at_config_creation_with_a_400(self, api, index, listener, no_connections):
        url = refused_corpus(listener.getsockname()[1])[index]
        response = api.post_json("/configs/webhook", {"url": url})
        assert response.status_code == 400, (url, response.content)
        body = response.json()
        assert body["error"] == "invalid-parameter" and "url" in body["params"]
        assert not WebhookConfig.objects.exists()
        assert connections_seen(listener) == 0 and no_connections == []

    @pytest.mark.parametrize("index", range(len(refused_corpus(1))))
    def test_at_delivery_without_a_connection(self, index, listener, no_connections):
        url = refused_corpus(listener.getsockname()[1])[index]
        outcome = publisher.post(config_url=url, secret="whsec", event_id="e1", body=b"{}")
        assert outcome.status_code is None and outcome.error.startswith("refused: "), (url, outcome)
        assert outcome.permanent
        assert connections_seen(listener) == 0 and no_connections == []

    def test_names_resolving_to_loopback_or_to_any_private_address(self, api, names, listener, no_connections):
        port = listener.getsockname()[1]
        names["loopback.example.test"] = ["127.0.0.1"]
        names["mapped.example.test"] = ["::ffff:127.0.0.1"]
        names["mixed.example.test"] = [PUBLIC, "10.0.0.7"]
        for host in names:
            url = f"http://{host}:{port}/hook"
            response = api.post_json("/configs/webhook", {"url": url})
            assert response.status_code == 400 and "url" in response.json()["params"], host
            outcome = publisher.post(config_url=url, secret="whsec", event_id="e1", body=b"{}")
            assert outcome.error.startswith(f"refused: The host {host} resolves to"), outcome
        assert connections_seen(listener) == 0 and no_connections == []

    def test_the_messages_say_why(self):
        with pytest.raises(Refused, match="user name or password"):
            parse("http://user@example.com/")
        with pytest.raises(Refused, match="backslashes"):
            parse("http://127.0.0.1:80\\@1.1.1.1/")
        with pytest.raises(Refused, match="dotted-quad"):
            parse("http://0x7f000001/")
        with pytest.raises(Refused, match=r"carries the IPv4 address 127\.0\.0\.1"):
            resolve(parse("http://[64:ff9b::7f00:1]/"), allow_private=False)
        with pytest.raises(Refused, match="not a public unicast address"):
            resolve(parse("http://[::127.0.0.1]/"), allow_private=False)


class TestAllowed:
    @pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", PUBLIC, "2606:4700:4700::1111", "2a00:1450:4001::1",
                                         "64:ff9b::808:808", "::ffff:8.8.8.8", "192.31.196.1"])
    def test_public_unicast_addresses(self, address):
        assert address_refusal(ipaddress.ip_address(address)) is None

    @pytest.mark.parametrize("address", ["0.0.0.1", "127.255.255.254", "169.254.0.1", "100.127.255.255", "192.0.0.170",
                                         "192.88.99.1", "198.19.255.255", "240.0.0.1", "::", "::1", "::7f00:1",
                                         "fe80::1", "fd00:ec2::254", "2001::1", "2001:db8::1", "2002:808:808::1",
                                         "3fff::1", "64:ff9b::a00:1", "64:ff9b:1::808:808", "ff0e::1"])
    def test_everything_else(self, address):
        assert address_refusal(ipaddress.ip_address(address))

    def test_a_public_name(self, api, names, no_connections):
        names["hooks.example.test"] = [PUBLIC, "2606:4700:4700::1111"]
        response = api.post_json("/configs/webhook", {"url": "https://hooks.example.test/webhooks"})
        assert response.status_code == 201, response.content
        assert no_connections == []

    def test_what_is_sent_where(self):
        target = parse("HTTP://Hooks.Example.COM:8080/a/b?c=d&e=%2F")
        assert (target.scheme, target.host, target.port, target.path) == ("http", "hooks.example.com", 8080,
                                                                          "/a/b?c=d&e=%2F")
        assert target.netloc == "hooks.example.com:8080"
        assert target.url_at(ipaddress.ip_address(PUBLIC)) == f"http://{PUBLIC}:8080/a/b?c=d&e=%2F"
        assert parse("https://hooks.example.com").netloc == "hooks.example.com"
        assert parse("https://hooks.example.com").path == "/"
        six = parse("http://[2606:4700:4700:0::1111]:81/x")
        assert six.netloc == "[2606:4700:4700::1111]:81"
        assert six.url_at(six.address) == "http://[2606:4700:4700::1111]:81/x"
        assert resolve(parse("http://[::ffff:8.8.8.8]/"), allow_private=False) == [ipaddress.ip_address("8.8.8.8")]


class TestPinnedConnection:
    def test_one_resolution_and_the_original_host_header(self, settings, names):
        settings.RICLOUD_WEBHOOK_ALLOW_PRIVATE = True
        receiver = Receiver()
        try:
            port = receiver.server.server_port
            names["receiver.example.test"] = ["127.0.0.1"]
            outcome = publisher.post(config_url=f"http://receiver.example.test:{port}/webhooks", secret="whsec",
                                     event_id="e1", body=b"{}")
            assert outcome.ok, outcome
            (request,) = receiver.requests
            assert request["headers"]["Host"] == f"receiver.example.test:{port}"
            assert request["path"] == "/webhooks/e1"
            assert names.lookups == ["receiver.example.test"]  # the checked answer is the one used
        finally:
            receiver.close()

    def test_dns_rebinding_between_check_and_send_is_refused_at_send(self, api, key, names, listener, no_connections):
        port = listener.getsockname()[1]
        names["rebind.example.test"] = [PUBLIC]
        config = api.post_json("/configs/webhook", {"url": f"http://rebind.example.test:{port}/webhooks"}).json()
        assert config["state"] == "new"
        key.organisation.webhook_config_default_id = config["id"]
        key.organisation.save()
        user = User.objects.create(organisation=key.organisation, key=key, identifier="u")
        create_session(key=key, user=user, source_type="mocks.mock", identifier="x", payload={})
        event = Event.objects.get(type="session", action="created")

        names["rebind.example.test"] = ["127.0.0.1"]  # the name now answers with loopback
        assert webhooks.deliver_event(event.id, send=publisher.post) == "failed"
        (attempt,) = WebhookAttempt.objects.all()
        assert attempt.error.startswith("refused: The host rebind.example.test resolves to an address: 127.0.0.1")
        assert attempt.status_code is None
        assert connections_seen(listener) == 0 and no_connections == []

    def test_a_name_that_does_not_resolve_now_is_retried_not_refused(self, key, names, settings):
        names["gone.example.test"] = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        config = WebhookConfig.objects.create(organisation=key.organisation, url="http://gone.example.test/hook",
                                              secret=seal("whsec"), state="valid")
        key.organisation.webhook_config_default = config
        key.organisation.save()
        user = User.objects.create(organisation=key.organisation, key=key, identifier="u")
        create_session(key=key, user=user, source_type="mocks.mock", identifier="x", payload={})
        event = Event.objects.get(type="session", action="created")
        assert webhooks.deliver_event(event.id, send=publisher.post) == "pending"
        assert WebhookAttempt.objects.get(delivery__event=event).error == "The host gone.example.test does not resolve."
        assert WebhookDelivery.objects.get(event=event).next_attempt_at is not None


def _certificates(tmp_path, name: str):
    """A CA (written to ca.pem) and a server certificate for `name` signed by it."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "server.pem").write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return tmp_path / "ca.pem", tmp_path / "server.pem"


@pytest.fixture
def tls_receiver(tmp_path, monkeypatch, settings, names):
    """An HTTPS receiver on 127.0.0.1 with a certificate for hooks.example.test, recording the
    server name (SNI) each client asked for."""
    settings.RICLOUD_WEBHOOK_ALLOW_PRIVATE = True
    ca, server_pem = _certificates(tmp_path, "hooks.example.test")
    monkeypatch.setattr(publisher, "VERIFY", str(ca))
    server_names, requests = [], []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            requests.append({"path": self.path, "host": self.headers["Host"]})
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(server_pem)
    context.sni_callback = lambda sock, name, ctx: server_names.append(name)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    names["hooks.example.test"] = ["127.0.0.1"]
    names["other.example.test"] = ["127.0.0.1"]
    yield server.server_port, server_names, requests
    server.shutdown()
    server.server_close()


class TestTLS:
    def test_the_server_name_and_certificate_are_the_hosts(self, tls_receiver):
        port, server_names, requests = tls_receiver
        outcome = publisher.post(config_url=f"https://hooks.example.test:{port}/webhooks", secret="whsec",
                                 event_id="e1", body=b"{}")
        assert outcome.ok, outcome
        assert server_names == ["hooks.example.test"]
        assert requests == [{"path": "/webhooks/e1", "host": f"hooks.example.test:{port}"}]

    def test_a_certificate_for_another_name_fails(self, tls_receiver):
        port, server_names, requests = tls_receiver
        outcome = publisher.post(config_url=f"https://other.example.test:{port}/webhooks", secret="whsec",
                                 event_id="e1", body=b"{}")
        assert outcome.status_code is None and "certificate" in outcome.error.lower(), outcome
        assert not outcome.permanent
        assert server_names == ["other.example.test"] and requests == []
