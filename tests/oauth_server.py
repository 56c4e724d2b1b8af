"""A real OAuth 2.0 authorization server on loopback for the sign-in tests, built on Authlib's
server side (Flask): authorization-code grant with PKCE required, client-secret authentication,
bearer tokens and a userinfo endpoint. The "user" approving is whoever `approve_as` names, so a
test plays the browser by following the redirects itself.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from authlib.integrations.flask_oauth2 import AuthorizationServer, ResourceProtector
from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6750 import BearerTokenValidator
from authlib.oauth2.rfc7636 import CodeChallenge
from flask import Flask, jsonify
from werkzeug.serving import make_server

CLIENT_ID = "stock-copilot-test"
CLIENT_SECRET = "test-client-secret-0123456789abcdef"


@dataclass
class ProviderUser:
    subject: str
    email: str
    email_verified: bool = True
    name: str = "Olivia OAuth"


@dataclass
class Client:
    redirect_uri: str

    def get_client_id(self) -> str:
        return CLIENT_ID

    def get_default_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_allowed_scope(self, scope: str) -> str:
        return scope

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri == self.redirect_uri

    def check_client_secret(self, client_secret: str) -> bool:
        return secrets.compare_digest(client_secret, CLIENT_SECRET)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "authorization_code"


@dataclass
class Code:
    code: str
    user: ProviderUser
    redirect_uri: str
    scope: str
    code_challenge: str | None
    code_challenge_method: str | None

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope


@dataclass
class Token:
    access_token: str
    user: ProviderUser
    scope: str
    issued_at: float = field(default_factory=time.time)
    expires_in: int = 3600

    def check_client(self, client: Any) -> bool:
        return True

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return self.expires_in

    def is_expired(self) -> bool:
        return time.time() > self.issued_at + self.expires_in

    def is_revoked(self) -> bool:
        return False

    def get_user(self) -> ProviderUser:
        return self.user


class LocalAuthorizationServer:
    """Start with `with LocalAuthorizationServer(redirect_uri) as server:`; `server.url`."""

    def __init__(self, redirect_uri: str) -> None:
        self.client = Client(redirect_uri)
        self.approve_as = ProviderUser("subject-1", "olivia@example.com")
        self.codes: dict[str, Code] = {}
        self.tokens: dict[str, Token] = {}
        self.app = self._build()
        self._server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"

    def _build(self) -> Flask:
        app = Flask("local-oauth")
        outer = self

        class CodeGrant(grants.AuthorizationCodeGrant):
            TOKEN_ENDPOINT_AUTH_METHODS: ClassVar = ["client_secret_basic", "client_secret_post"]

            def save_authorization_code(self, code: str, request: Any) -> None:
                outer.codes[code] = Code(
                    code,
                    request.user,
                    request.payload.redirect_uri,
                    request.payload.scope,
                    request.payload.data.get("code_challenge"),
                    request.payload.data.get("code_challenge_method"),
                )

            def query_authorization_code(self, code: str, client: Any) -> Code | None:
                return outer.codes.get(code)

            def delete_authorization_code(self, authorization_code: Code) -> None:
                outer.codes.pop(authorization_code.code, None)

            def authenticate_user(self, authorization_code: Code) -> ProviderUser:
                return authorization_code.user

        def save_token(token: dict[str, Any], request: Any) -> None:
            outer.tokens[token["access_token"]] = Token(
                token["access_token"], request.user, token.get("scope", "")
            )

        server = AuthorizationServer(
            app,
            query_client=lambda client_id: outer.client if client_id == CLIENT_ID else None,
            save_token=save_token,
        )
        server.register_grant(CodeGrant, [CodeChallenge(required=True)])

        class Validator(BearerTokenValidator):
            def authenticate_token(self, token_string: str) -> Token | None:
                return outer.tokens.get(token_string)

        protect = ResourceProtector()
        protect.register_token_validator(Validator())

        @app.get("/authorize")
        def authorize() -> Any:  # the user approves at once
            return server.create_authorization_response(grant_user=outer.approve_as)

        @app.post("/token")
        def token() -> Any:
            return server.create_token_response()

        @app.get("/userinfo")
        @protect()
        def userinfo() -> Any:
            from authlib.integrations.flask_oauth2 import current_token

            user = current_token.user
            return jsonify(
                sub=user.subject,
                email=user.email,
                email_verified=user.email_verified,
                name=user.name,
            )

        @app.get("/.well-known/openid-configuration")
        def discovery() -> Any:
            return jsonify(
                issuer=outer.url,
                authorization_endpoint=f"{outer.url}/authorize",
                token_endpoint=f"{outer.url}/token",
                userinfo_endpoint=f"{outer.url}/userinfo",
            )

        return app

    def __enter__(self) -> LocalAuthorizationServer:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._thread.join(timeout=10)
