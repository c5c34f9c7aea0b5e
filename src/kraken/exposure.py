"""What a server's addresses expose, decided before anything is bound.

The admin API can read every topic and shut the server down, so it stays on
loopback unless it has a token: on any other address without ``admin_token``
the server refuses to start, unless the operator says ``--admin-insecure``, and
then it warns at every start. The Kraken protocol has no authentication of its
own (as the original's): listening beyond loopback is its normal deployment, so
it only warns. docs/security.md explains the choices.
"""

from __future__ import annotations

import ipaddress

from kraken.config import Config

INSECURE_FLAG = "--admin-insecure"


def is_loopback(host: str) -> bool:
    """``localhost`` (and ``*.localhost``), or an address in 127.0.0.0/8 or ::1.

    A wildcard (0.0.0.0, ::), another address or any other name is not: a name may
    resolve anywhere.
    """
    name = host.strip().lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


def refusal(config: Config) -> str | None:
    """Why the server must not start as configured without ``--admin-insecure``, or None."""
    if is_loopback(config.admin_ip) or config.admin_token:
        return None
    return (
        f"the admin API would listen on {config.admin_ip} (admin_ip), beyond this host, "
        "without a token: anyone who reaches it could read every topic and shut the server "
        "down. Set admin_token_file (or KRAKEN_ADMIN_TOKEN), keep admin_ip on 127.0.0.1, or "
        f"give {INSECURE_FLAG} to run it open anyway"
    )


def warnings(
    config: Config, listen_port: int | None = None, admin_port: int | None = None
) -> list[str]:
    """What to say loudly at every start about the addresses the server listens on (the
    ports bound, when given: a configured 0 is any free port)."""
    lines = []
    if not is_loopback(config.admin_ip) and not config.admin_token:
        lines.append(
            f"INSECURE: the admin API on {config.admin_ip}:{admin_port or config.admin_port} "
            "has no token "
            f"({INSECURE_FLAG}): anyone who reaches it can read every topic and shut the "
            "server down"
        )
    if not is_loopback(config.listen_ip):
        port = listen_port or config.tcp_server_port
        lines.append(
            f"the Kraken protocol listens on {config.listen_ip} (listen_ip): it has no "
            f"authentication, so anyone who reaches port {port} can subscribe and publish; "
            "let only your application servers reach it (firewall, private network)"
        )
    return lines
