"""Webhook targets: the one URL parser and the address policy, shared by the config check (API)
and the sender (workers/publishers/webhooks.py).

Server-side request forgery hides in the differences between what a check reads and what the
HTTP client does: `http://127.0.0.1:80\\@1.1.1.1/` is host 1.1.1.1 to `urlsplit` but 127.0.0.1
to urllib3; `0x7f000001`, `127.1` and `2130706433` are loopback to `inet_aton`; a name resolves
once for the check and again for the connection (DNS rebinding). So:

* `parse` accepts one strict, unambiguous grammar (no user info, backslash, percent sign in the
  host, numeric host other than a dotted quad, fragment, whitespace or non-ASCII), and refuses a
  URL that urllib3 or `urlsplit` would read differently;
* `resolve` resolves the host once and checks every address against an allow list (below);
* the sender connects to those checked addresses (never resolving again), sending the parsed
  host as the Host header and as the TLS server name.

The allow list: IPv4 unicast outside every special-purpose block of the IANA registry, and IPv6
global unicast (2000::/3) outside its special-purpose blocks. An address that carries an IPv4
address is judged by that address (IPv4-mapped `::ffff:a.b.c.d`, NAT64 `64:ff9b::/96`) or refused
outright where the embedding is deprecated or local (IPv4-compatible `::a.b.c.d`, 6to4, Teredo,
local-use NAT64 `64:ff9b:1::/48`: none of them is in the allowed IPv6 space).
"""
import ipaddress
import re
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from urllib3.util import parse_url

__all__ = ["Target", "Refused", "Unresolvable", "parse", "address_refusal", "resolve", "refusal", "delivery_url"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_V4_UNICAST = ipaddress.ip_network("0.0.0.0/0")
_V4_REFUSED = tuple(ipaddress.ip_network(network) for network in (
    "0.0.0.0/8",        # "this network"; 0.0.0.0 reaches the local host
    "10.0.0.0/8",       # private
    "100.64.0.0/10",    # shared address space (carrier-grade NAT); 100.100.100.200 is Alibaba's metadata
    "127.0.0.0/8",      # loopback
    "169.254.0.0/16",   # link-local; 169.254.169.254 is the AWS/GCP/Azure/… metadata service
    "172.16.0.0/12",    # private
    "192.0.0.0/24",     # IETF protocol assignments (192.0.0.9, 192.0.0.170 NAT64 discovery, 192.0.0.192 OCI metadata)
    "192.0.2.0/24",     # documentation (TEST-NET-1)
    "192.88.99.0/24",   # 6to4 relay anycast (deprecated)
    "192.168.0.0/16",   # private
    "198.18.0.0/15",    # benchmarking
    "198.51.100.0/24",  # documentation (TEST-NET-2)
    "203.0.113.0/24",   # documentation (TEST-NET-3)
    "224.0.0.0/4",      # multicast
    "240.0.0.0/4",      # reserved, and 255.255.255.255 broadcast
    "168.63.129.16/32",  # Azure's platform endpoint (WireServer): public space, but a metadata service
))
_V6_GLOBAL_UNICAST = ipaddress.ip_network("2000::/3")
_V6_REFUSED = tuple(ipaddress.ip_network(network) for network in (
    "2001::/23",        # IETF protocol assignments: Teredo 2001::/32, benchmarking 2001:2::/48, ORCHID, …
    "2001:db8::/32",    # documentation
    "2002::/16",        # 6to4: carries an IPv4 address, reached through relays
    "3fff::/20",        # documentation (RFC 9637)
))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # well-known prefix: the last 32 bits are the IPv4 address

# Everything RFC 3986 allows outside a host except "#" (a fragment would swallow the event id
# that delivery appends) and "[" "]" (only around an IPv6 host).
_URL_CHARACTERS = re.compile(r"[A-Za-z0-9\-._~:/?@!$&'()*+,;=%\[\]]*\Z")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://(?P<authority>[^/?#]*)(?P<path>[^?#]*)(?:\?(?P<query>[^#]*))?\Z")
_AUTHORITY = re.compile(r"(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9._\-]+))(?::(?P<port>[0-9]{1,5}))?\Z")
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_\-]{0,61}[a-z0-9_])?\Z")
_NUMERIC_LABEL = re.compile(r"(?:0[xX][0-9A-Fa-f]*|[0-9]+)\Z")
_DOTTED_QUAD = re.compile(r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\Z")
DEFAULT_PORTS = {"http": 80, "https": 443}


class Refused(ValueError):
    """The target is not allowed; the message says why (it is shown to the API client)."""


class Unresolvable(Refused):
    """The host name does not resolve (now): refused when configuring, retried when delivering."""


@dataclass(frozen=True)
class Target:
    """A parsed webhook URL: what is sent where. `host` is a lower-case name, or an IP address
    (without brackets) when `address` is set."""

    scheme: str
    host: str
    port: int
    path: str  # path and query, starting with "/"
    address: IPAddress | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.netloc}{self.path}"

    @property
    def netloc(self) -> str:
        """The Host header: the host, bracketed if IPv6, with the port unless it is the default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    def url_at(self, address: IPAddress) -> str:
        """The URL that connects to `address` (a checked address of this target)."""
        host = f"[{address}]" if address.version == 6 else str(address)
        return f"{self.scheme}://{host}:{self.port}{self.path}"


def delivery_url(config_url: str, event_id) -> str:
    """`<url>/<event id>` joined with exactly one slash: where an event is delivered."""
    return f"{config_url.rstrip('/')}/{event_id}"


def parse(url: str) -> Target:
    """Parse a webhook URL in the one grammar this server accepts, or raise Refused."""
    if not isinstance(url, str) or not _URL_CHARACTERS.match(url):
        raise Refused("The URL may contain only ASCII letters, digits and -._~:/?@!$&'()*+,;=% "
                      "(no spaces, backslashes or fragments; write international names in their xn-- form).")
    if _BAD_PERCENT.search(url):
        raise Refused("A % in the URL must start a %XX escape.")
    match = _URL.match(url)
    if not match or match["scheme"].lower() not in DEFAULT_PORTS:
        raise Refused("The URL must be http(s) with a host.")
    scheme = match["scheme"].lower()
    authority = _AUTHORITY.match(match["authority"])
    if not authority:
        if "@" in match["authority"]:
            raise Refused("The URL may not contain a user name or password.")
        raise Refused("The URL must be http(s) with a host, and an optional port.")
    path = match["path"] or "/"
    if "[" in path or "]" in path or (match["query"] is not None and ("[" in match["query"] or "]" in match["query"])):
        raise Refused("Brackets are allowed only around an IPv6 address.")
    if match["query"] is not None:
        path += "?" + match["query"]
    port = int(authority["port"]) if authority["port"] else DEFAULT_PORTS[scheme]
    if not 0 < port < 65536:
        raise Refused("The port must be between 1 and 65535.")

    address = None
    if authority["ipv6"] is not None:
        try:
            address = ipaddress.IPv6Address(authority["ipv6"])
        except ValueError:
            raise Refused(f"[{authority['ipv6']}] is not an IPv6 address.") from None
        host = str(address)
    else:
        host = authority["name"].lower()
        labels = host.split(".")
        if _NUMERIC_LABEL.match(labels[-1]):
            # A name ending in a number is an IPv4 address to browsers and to inet_aton, which also
            # read 127.1, 0177.0.0.1, 0x7f000001 and 2130706433: only the dotted quad is accepted.
            if not _DOTTED_QUAD.match(host):
                raise Refused(f"The host {host} is not a dotted-quad IPv4 address (a.b.c.d, decimal, no leading zeros).")
            address = ipaddress.IPv4Address(host)
        elif len(host) > 253 or not all(_LABEL.match(label) for label in labels):
            raise Refused(f"The host {host} is not a valid host name.")

    target = Target(scheme=scheme, host=host, port=port, path=path, address=address)
    _same_for_other_parsers(url, target)
    return target


def _same_for_other_parsers(url: str, target: Target) -> None:
    """Refuse a URL that urllib3 (what requests uses) or urllib.parse read differently. Delivery
    never gives them the original URL, so this is a second line, not the defence."""
    try:
        theirs = parse_url(url)
        split = urlsplit(url)
        readings = {
            ((theirs.host or "").strip("[]").lower(), theirs.port or DEFAULT_PORTS[target.scheme], theirs.auth),
            ((split.hostname or ""), split.port or DEFAULT_PORTS[target.scheme], split.username),
        }
    except ValueError:
        raise Refused("The URL is not read the same way by every HTTP client.") from None
    host = str(ipaddress.ip_address(target.host)) if target.address else target.host
    for their_host, their_port, their_user in readings:
        try:
            their_host = str(ipaddress.ip_address(their_host)) if target.address else their_host
        except ValueError:
            pass
        if (their_host, their_port, their_user) != (host, target.port, None):
            raise Refused("The URL is not read the same way by every HTTP client.")


def address_refusal(address: IPAddress) -> str | None:
    """Why an address may not be a webhook target (None: allowed). A strict allow list: public
    unicast only (see the module docstring)."""
    if address.version == 6:
        embedded = address.ipv4_mapped or (ipaddress.IPv4Address(int(address) & 0xFFFFFFFF) if address in _NAT64 else None)
        if embedded is not None:
            reason = address_refusal(embedded)
            return f"it carries the IPv4 address {embedded}, and {reason}" if reason else None
        if address not in _V6_GLOBAL_UNICAST or any(address in network for network in _V6_REFUSED):
            return f"{address} is not a public unicast address"
    elif address not in _V4_UNICAST or any(address in network for network in _V4_REFUSED):
        return f"{address} is not a public unicast address"
    if not address.is_global:  # the standard library's registry, as a second opinion
        return f"{address} is not a public unicast address"
    return None


def connectable(address: IPAddress) -> IPAddress:
    """The address to open a socket to: an IPv4-mapped IPv6 address is its IPv4 address."""
    return address.ipv4_mapped if address.version == 6 and address.ipv4_mapped else address


def resolve(target: Target, *, allow_private: bool) -> list[IPAddress]:
    """The addresses to connect to, resolved once; each one is checked unless `allow_private`.
    Raises Refused (a refused address) or Unresolvable (no address)."""
    if target.address is not None:
        addresses = [target.address]
    else:
        try:
            infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            raise Unresolvable(f"The host {target.host} does not resolve.") from None
        addresses = []
        for info in infos:
            if info[0] not in (socket.AF_INET, socket.AF_INET6):
                continue
            address = ipaddress.ip_address(info[4][0].split("%")[0])
            if address not in addresses:
                addresses.append(address)
        if not addresses:
            raise Unresolvable(f"The host {target.host} does not resolve.")
    if not allow_private:
        for address in addresses:
            reason = address_refusal(address)
            if reason:
                what = "The address" if target.address is not None else f"The host {target.host} resolves to an address:"
                raise Refused(f"{what} {reason}.")
    return [connectable(address) for address in addresses]


def refusal(url: str, *, allow_private: bool) -> str | None:
    """Why a webhook config URL is refused, or None (the check at config creation)."""
    try:
        target = parse(url)
        if not allow_private:
            resolve(target, allow_private=False)
    except Refused as exc:
        return str(exc)
    return None
