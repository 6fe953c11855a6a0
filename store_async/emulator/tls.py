"""TLS for the emulator: a throw-away CA and server certificate made with ``trustme``.

azure-identity refuses ``http://`` authorities, so its real ``ClientSecretCredential`` can
only reach the emulator's token endpoint over HTTPS. The CA is written to a temporary PEM
file because azure-core's ``connection_verify`` takes a *path* (``ssl.create_default_context
(cafile=...)``), not PEM bytes.
"""

from __future__ import annotations

import ssl
import tempfile
from pathlib import Path

__all__ = ["TlsMaterial"]


class TlsMaterial:
    """A CA, a certificate for the loopback names, and the CA in a temporary file."""

    def __init__(self, host: str) -> None:
        try:
            import trustme
        except ImportError as error:  # pragma: no cover - trustme ships with the test extra
            raise RuntimeError(
                "StoreEmulator(tls=True) needs the 'trustme' package: pip install trustme"
            ) from error
        self._ca = trustme.CA(organization_name="store_async emulator")
        names = sorted({host, "127.0.0.1", "localhost", "::1"})
        self._certificate = self._ca.issue_cert(*names)
        self.ca_pem: bytes = self._ca.cert_pem.bytes()
        self._directory = tempfile.TemporaryDirectory(prefix="store-emulator-")
        self.ca_file = str(Path(self._directory.name) / "emulator-ca.pem")
        Path(self.ca_file).write_bytes(self.ca_pem)

    def server_context(self) -> ssl.SSLContext:
        """The server side: the certificate and its key."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._certificate.configure_cert(context)
        return context

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts only the emulator's CA."""
        return ssl.create_default_context(cadata=self.ca_pem.decode("ascii"))

    def close(self) -> None:
        """Remove the temporary CA file."""
        self._directory.cleanup()
