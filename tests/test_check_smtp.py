"""`feedpub check --smtp`: a real login to a real SMTP server on 127.0.0.1, and nothing sent."""

from __future__ import annotations

import socket

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from click.testing import CliRunner

from feedpub.cli import main
from tests.conftest import mail_settings
from tests.postfix import free_port

KEY = {"FEEDPUB_SECRET_KEY": "k" * 40}


class CountingHandler:
    """Accepts everything, and counts each envelope opened and each message taken."""

    def __init__(self) -> None:
        self.mail_from: list[str] = []
        self.data: list[bytes] = []

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        self.mail_from.append(address)
        envelope.mail_from = address
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.data.append(envelope.original_content)
        return "250 Message accepted for delivery"


def only_bob(server, session, envelope, mechanism, auth_data):
    # handled=False: the server itself answers a refusal, with its standard 535.
    return AuthResult(success=auth_data.login == b"bob" and auth_data.password == b"right horse", handled=False)


@pytest.fixture
def auth_server():
    handler = CountingHandler()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port(), authenticator=only_bob,
                            auth_require_tls=False)
    controller.start()
    yield controller
    controller.stop()


def check_smtp(site_dir, **env):
    result = CliRunner().invoke(main, ["check", "--smtp", "--site", str(site_dir)], env={**KEY, **env},
                                catch_exceptions=False)
    return result.exit_code, result.output


def smtp_line(site_dir) -> int:
    lines = (site_dir / "feedpub.yaml").read_text(encoding="utf-8").splitlines()
    return next(i + 1 for i, text in enumerate(lines) if text.strip() == "smtp:")


def test_good_credentials_log_in_and_send_nothing(site_dir, auth_server):
    mail_settings(site_dir, auth_server.port, extra="    username: bob\n")
    code, output = check_smtp(site_dir, FEEDPUB_SMTP_PASSWORD="right horse")
    assert code == 0, output
    assert (f"smtp: 127.0.0.1:{auth_server.port} accepts the login of bob without TLS; nothing was sent\n"
            in output)
    assert "error:" not in output
    assert auth_server.handler.mail_from == [] and auth_server.handler.data == []


def test_a_wrong_password_is_the_servers_535(site_dir, auth_server):
    mail_settings(site_dir, auth_server.port, extra="    username: bob\n")
    code, output = check_smtp(site_dir, FEEDPUB_SMTP_PASSWORD="wrong horse")
    assert code == 1
    assert (f"error: feedpub.yaml:{smtp_line(site_dir)}: email.smtp: 127.0.0.1:{auth_server.port} refused "
            "the login for bob: 535 5.7.8 Authentication credentials invalid\n") in output
    assert "accepts the login" not in output and "Traceback" not in output
    assert auth_server.handler.mail_from == [] and auth_server.handler.data == []


def test_an_unset_password_variable_is_said_before_connecting(site_dir, auth_server):
    mail_settings(site_dir, auth_server.port, extra="    username: bob\n    password_env: BOB_PASSWORD\n")
    lines = (site_dir / "feedpub.yaml").read_text(encoding="utf-8").splitlines()
    username = next(i + 1 for i, text in enumerate(lines) if text.strip().startswith("username:"))
    code, output = check_smtp(site_dir, BOB_PASSWORD=None)
    assert code == 1
    assert (f"error: feedpub.yaml:{username}: email.smtp.username: logging in as bob needs the password in "
            "BOB_PASSWORD, which is not set\n") in output


def test_no_login_set_still_greets_the_server(site_dir, auth_server):
    mail_settings(site_dir, auth_server.port)
    code, output = check_smtp(site_dir)
    assert code == 0, output
    assert f"smtp: 127.0.0.1:{auth_server.port} answers (no login is set) without TLS; nothing was sent\n" in output
    assert auth_server.handler.data == []


def test_a_closed_port_is_one_error_line(site_dir):
    port = free_port()  # nothing listens there
    mail_settings(site_dir, port)
    code, output = check_smtp(site_dir)
    assert code == 1
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    assert errors[0].startswith(f"error: feedpub.yaml:{smtp_line(site_dir)}: email.smtp: cannot connect to "
                                f"127.0.0.1:{port}: ")
    assert "refused" in errors[0].lower() and "Traceback" not in output


def test_a_server_that_never_greets_times_out(site_dir):
    with socket.socket() as silent:  # the kernel completes the handshake; no one ever answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        mail_settings(site_dir, port, timeout=1)
        code, output = check_smtp(site_dir)
    assert code == 1
    assert f"email.smtp: no answer from 127.0.0.1:{port} within 1 s\n" in output


def test_tls_to_a_plain_server_is_a_tls_failure(site_dir, auth_server):
    mail_settings(site_dir, auth_server.port)
    settings = site_dir / "feedpub.yaml"
    settings.write_text(settings.read_text(encoding="utf-8").replace("security: none", "security: tls"),
                        encoding="utf-8")
    code, output = check_smtp(site_dir)
    assert code == 1
    assert f"email.smtp: TLS with 127.0.0.1:{auth_server.port} failed: " in output
    assert auth_server.handler.data == []


def test_starttls_that_the_server_does_not_offer(site_dir, auth_server):
    mail_settings(site_dir, auth_server.port)
    settings = site_dir / "feedpub.yaml"
    settings.write_text(settings.read_text(encoding="utf-8").replace("security: none", "security: starttls"),
                        encoding="utf-8")
    code, output = check_smtp(site_dir)
    assert code == 1
    assert f"email.smtp: cannot connect to 127.0.0.1:{auth_server.port}: STARTTLS" in output


def test_the_outbox_is_a_warning(site_dir):
    code, output = check_smtp(site_dir)
    assert code == 0, output
    assert "warning: feedpub.yaml: email.smtp: not set: mail goes to the outbox folder outbox/, " \
           "so there is no server to try\n" in output


def test_broken_settings_are_not_tried(site_dir):
    mail_settings(site_dir, free_port(), extra="    colour: blue\n")
    code, output = check_smtp(site_dir)
    assert code == 1
    assert "email.smtp.colour: unknown setting" in output
    assert "warning: smtp: not tried until the errors of feedpub.yaml are fixed\n" in output
