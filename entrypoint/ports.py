"""Is a port free to listen on? Asked before anything starts, so a clash is
one clear line instead of a proxy that dies in a restart loop."""

from __future__ import annotations

import errno
import socket

from .errors import EntryError


def check_free(host: str, port: int, option: str) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # Same option the servers use, so a port in TIME_WAIT is not a clash.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except PermissionError:
            raise EntryError(
                f"{option} {port} needs privileges to listen on: run as root (ports below 1024) "
                f"or choose a port above 1023 with {option}."
            ) from None
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise EntryError(
                    f"{option} {port} is already in use on {host}: stop what listens there "
                    f"or choose another port with {option}."
                ) from error
            raise EntryError(f"cannot listen on {host}:{port} for {option} ({error.strerror}).") from error
