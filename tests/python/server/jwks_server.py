"""A real local JWKS endpoint for the JWT tests: an HTTP server in a thread
serving whatever key set the test puts in it (or failing, when it is down),
and the keys to sign test tokens with."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa


class SigningKey:
    """A private key with its key id, and its public half as a JWK."""

    def __init__(self, kid: str, kind: str = "RSA") -> None:
        self.kid = kid
        if kind == "RSA":
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            self.alg = "RS256"
            algorithm = jwt.algorithms.RSAAlgorithm
        else:
            self.private = ec.generate_private_key(ec.SECP256R1())
            self.alg = "ES256"
            algorithm = jwt.algorithms.ECAlgorithm
        self.jwk = {
            **json.loads(algorithm.to_jwk(self.private.public_key())),
            "kid": kid,
            "alg": self.alg,
        }

    def token(
        self, claims: dict[str, Any], *, kid: str | None = "same", alg: str | None = None
    ) -> str:
        """Claims signed with this key; exp defaults to an hour from now."""
        body = {"exp": int(time.time()) + 3600, **claims}
        headers = {"kid": self.kid if kid == "same" else kid} if kid is not None else {}
        return jwt.encode(body, self.private, algorithm=alg or self.alg, headers=headers)


class JwksServer:
    """Serves {"keys": [...]} at /jwks.json on 127.0.0.1; ``up = False`` makes it answer 503."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.up = True
        self.fetches = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.fetches += 1
                if not outer.up or self.path != "/jwks.json":
                    self.send_response(503 if not outer.up else 404)
                    self.end_headers()
                    return
                body = json.dumps({"keys": outer.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
