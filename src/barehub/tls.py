"""Checks of the files HTTPS depends on: a manual certificate and key, an ACME CA bundle.

Only the standard library: `ssl` loads the pair exactly as a TLS server would
(which also proves that the key belongs to the certificate), and decodes the
certificate for its dates and names. Problems are errors (nothing may change);
warnings (an expired certificate, a name it does not cover) are reported and
the install goes on.
"""

from __future__ import annotations

import datetime as dt
import os
import ssl
import stat
from dataclasses import dataclass, field

from barehub.settings import Settings

PEM_CERT = b"-----BEGIN CERTIFICATE-----"
#: The largest certificate, key or CA bundle read: a chain or a bundle of a few hundred
#: certificates fits; a runaway file (or /dev/zero behind a link) is refused.
MAX_PEM_BYTES = 4 << 20


@dataclass
class Findings:
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: files this user may not read: a problem for root (install, the proxy's
    #: start), only a warning for a `barehub check` run by another user (the
    #: hub's `systemctl reload` when hub.user is not root)
    unreadable: list[str] = field(default_factory=list)
    #: the bytes read (once) and checked, by key name ("certificate", "key",
    #: "acme_ca_certificates"): what is copied for traefik is exactly what was checked
    data: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class CertInfo:
    not_before: dt.datetime
    not_after: dt.datetime
    names: tuple[str, ...]
    subject: str


def _read(path: str, what: str, out: Findings) -> bytes | None:
    """The file's bytes, read through one descriptor; None (and a problem) unless it is a regular file.

    O_NONBLOCK: opening a FIFO, or a device, must not hang `barehub check` or the proxy's start.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        out.problems.append(f"{what} = {path!r}: no such file")
        return None
    except PermissionError:
        out.unreadable.append(f"{what} = {path!r}: cannot read it (permission denied); "
                              "run `barehub check` and `barehub install` as root")
        return None
    except OSError as e:
        out.problems.append(f"{what} = {path!r}: cannot read it: {e.strerror}")
        return None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            out.problems.append(f"{what} = {path!r} is a directory; give the PEM file itself")
            return None
        if not stat.S_ISREG(st.st_mode):
            out.problems.append(f"{what} = {path!r} is not a regular file (a FIFO, socket or device); "
                                "give the PEM file itself")
            return None
        chunks, size = [], 0
        while size <= MAX_PEM_BYTES:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > MAX_PEM_BYTES:
            out.problems.append(f"{what} = {path!r} is larger than {MAX_PEM_BYTES >> 20} MiB: "
                                "give the PEM file itself")
            return None
        return b"".join(chunks)
    except OSError as e:
        out.problems.append(f"{what} = {path!r}: cannot read it: {e.strerror}")
        return None
    finally:
        os.close(fd)


class _InMemory:
    """Bytes as a file path for OpenSSL (which only loads pairs from files), never on disk."""

    def __init__(self, data: bytes, name: str):
        self.fd = os.memfd_create(name, os.MFD_CLOEXEC)
        os.write(self.fd, data)
        self.path = f"/proc/self/fd/{self.fd}"

    def __enter__(self) -> str:
        return self.path

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


def _when(text: str) -> dt.datetime:
    return dt.datetime.fromtimestamp(ssl.cert_time_to_seconds(text), dt.timezone.utc)


def decode(path: str) -> CertInfo:
    """Dates and names of the first certificate in a PEM file (or a /proc/self/fd/N path)."""
    # _test_decode_cert is the decoder behind SSLSocket.getpeercert(), reachable for files.
    d = ssl._ssl._test_decode_cert(path)  # type: ignore[attr-defined]
    names = tuple(v for k, v in d.get("subjectAltName", ()) if k in ("DNS", "IP Address"))
    subject = ", ".join(f"{k}={v}" for rdn in d.get("subject", ()) for k, v in rdn)
    return CertInfo(_when(d["notBefore"]), _when(d["notAfter"]), names, subject)


def covers(names: tuple[str, ...], domain: str) -> bool:
    for n in names:
        n = n.lower()
        if n == domain:
            return True
        if n.startswith("*.") and domain.count(".") == n.count(".") and domain.split(".", 1)[1] == n[2:]:
            return True
    return False


def _check_pair(cert_copy: str, key_copy: str, cert_path: str, key_path: str, out: Findings) -> CertInfo | None:
    """Load the pair exactly as a TLS server would (which proves the key fits), then decode it."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(cert_copy, key_copy, password=lambda: b"")
    except ssl.SSLError as e:
        if "KEY_VALUES_MISMATCH" in str(e) or "key values mismatch" in str(e):
            out.problems.append(f"https.key = {key_path!r} does not match https.certificate = {cert_path!r}: "
                                "give the private key that belongs to this certificate")
        else:
            out.problems.append(f"https.certificate = {cert_path!r} and https.key = {key_path!r} cannot be "
                                f"used together: {e.reason or e}")
        return None
    try:
        return decode(cert_copy)
    except (ssl.SSLError, ValueError, KeyError) as e:
        out.problems.append(f"https.certificate = {cert_path!r} cannot be decoded: {e}")
        return None


def check_manual(cert_path: str, key_path: str, domains: list[str], now: dt.datetime | None = None) -> Findings:
    out = Findings()
    cert = _read(cert_path, "https.certificate", out)
    key = _read(key_path, "https.key", out)
    if cert is not None and PEM_CERT not in cert:
        out.problems.append(f"https.certificate = {cert_path!r} holds no PEM certificate "
                            "(a '-----BEGIN CERTIFICATE-----' block)")
        cert = None
    if key is not None:
        if b"ENCRYPTED" in key:
            out.problems.append(f"https.key = {key_path!r} is encrypted with a passphrase, which traefik cannot "
                                f"use: write an unencrypted copy (`openssl pkey -in {key_path} -out NEW.key`, "
                                "mode 600) and point https.key at it")
            key = None
        elif b"PRIVATE KEY-----" not in key:
            out.problems.append(f"https.key = {key_path!r} holds no PEM private key "
                                "(a '-----BEGIN ... PRIVATE KEY-----' block)")
            key = None
    if cert is None or key is None:
        return out

    with _InMemory(cert, "certificate") as cert_copy, _InMemory(key, "key") as key_copy:
        info = _check_pair(cert_copy, key_copy, cert_path, key_path, out)
    if info is None:
        return out
    out.data.update(certificate=cert, key=key)
    now = now or dt.datetime.now(dt.timezone.utc)
    if info.not_after <= now:
        out.warnings.append(f"https.certificate = {cert_path!r} expired on {info.not_after:%Y-%m-%d %H:%M} UTC: "
                            "browsers refuse it. Put the renewed certificate there, then "
                            "`systemctl restart jupyterhub-proxy`")
    elif info.not_after - now < dt.timedelta(days=14):
        out.warnings.append(f"https.certificate = {cert_path!r} expires on {info.not_after:%Y-%m-%d} UTC: "
                            "renew it soon, then `systemctl restart jupyterhub-proxy`")
    if info.not_before > now:
        out.warnings.append(f"https.certificate = {cert_path!r} is not valid before "
                            f"{info.not_before:%Y-%m-%d %H:%M} UTC")
    for d in domains:
        if not covers(info.names, d):
            shown = ", ".join(info.names) or info.subject or "no names"
            out.warnings.append(f"https.certificate = {cert_path!r} does not cover {d!r} from https.domains "
                                f"(it is for {shown}): browsers will warn")
    return out


def check_ca_bundle(path: str) -> Findings:
    out = Findings()
    data = _read(path, "https.acme_ca_certificates", out)
    if data is not None and PEM_CERT not in data:
        out.problems.append(f"https.acme_ca_certificates = {path!r} holds no PEM certificate")
    elif data is not None:
        out.data["acme_ca_certificates"] = data
    return out


def check_files(s: Settings) -> Findings:
    """Everything about files named in [https] that the settings validation cannot see."""
    mode = s["https.mode"]
    if mode == "manual":
        return check_manual(s["https.certificate"], s["https.key"], s["https.domains"])
    out = Findings()
    if mode == "letsencrypt" and s["https.acme_ca_certificates"]:
        out = check_ca_bundle(s["https.acme_ca_certificates"])
    return out
