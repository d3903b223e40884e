"""What `python serve.py` does (conf/serve.yaml): bind the address, check the key rule, load the model, print
where it serves, and run the server until stopped."""

from __future__ import annotations

import errno
import math
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from gptlab.core.errors import ConfigError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def api_key_for(cfg: dict) -> str | None:
    """The API key from the environment variable the config names; required off loopback unless the user
    turned that off in so many words."""
    key = os.environ.get(cfg["api_key_env"]) or None
    if key is None and cfg["host"] not in LOOPBACK and not cfg["no_api_key_on_a_public_address"]:
        raise ConfigError(
            f"host={cfg['host']} listens beyond this machine, so the API needs a key: put one in the environment "
            f"variable {cfg['api_key_env']} (clients send 'Authorization: Bearer <key>'), or serve without one "
            "by saying no_api_key_on_a_public_address=true"
        )
    return key


def model_facts(loaded, model_id: str) -> dict:
    """What the page shows: name, parameters, trained steps, validation perplexity of these weights."""
    from gptlab.hub.export import checkpoint_card
    from gptlab.models.language_model import language_model

    card = checkpoint_card(loaded.checkpoint) if loaded.checkpoint else {}
    val_loss = card.get("val_loss")
    return {
        "model": model_id,
        "source": loaded.source,
        "parameters": sum(p.numel() for p in loaded.model.parameters()),
        "trained_steps": card.get("global_step"),
        "val_loss": val_loss,
        "val_ppl": math.exp(val_loss) if val_loss is not None else None,
        "context_length": language_model(loaded.model).context_length,
        "created": int(time.time()),
    }


def default_model_id(source: str) -> str:
    path = Path(source)
    if path.exists():
        # A checkpoint: its run folder's name (outputs/DATE/TIME -> DATE/TIME); weights: their folder's.
        run = path.parent.parent if path.parent.name == "checkpoints" else (path.parent if path.is_file() else path)
        return f"{run.parent.name}/{run.name}" if run.parent.name else run.name
    return source


def bind(host: str, port: int) -> socket.socket:
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.create_server((host, port), family=family)
    except OSError as err:
        not_here = isinstance(err, socket.gaierror) or err.errno == errno.EADDRNOTAVAIL
        fix = "use 127.0.0.1 (or 0.0.0.0 with an API key)" if not_here else "choose another with port=N (port=0: any free port)"
        why = "is not an address of this machine" if not_here else f"cannot be listened on ({os.strerror(err.errno)})"
        raise ConfigError(f"{'host=' + host if not_here else f'{host}:{port}'} {why}; {fix}") from None
    return sock


def serve_from_config(cfg: dict) -> None:
    import uvicorn

    from gptlab.checkpoints.loading import (
        load_for_generation,
        require_one_model_source,
        resolve_device,
        resolve_dtype,
    )
    from gptlab.generation.command import generation_window
    from gptlab.serving.app import create_app
    from gptlab.serving.engine import Engine
    from gptlab.serving.protocol import Limits

    require_one_model_source(cfg.get("ckpt_path"), cfg.get("init_from"))
    # The address first: a wrong host or a port in use is said before the key rule and before the model
    # loads (seconds; a minute for gpt2-xl). Nothing is served until uvicorn runs on the socket.
    sock = bind(cfg["host"], cfg["port"])
    api_key = api_key_for(cfg)
    device = resolve_device(cfg["device"])
    loaded = load_for_generation(cfg.get("ckpt_path"), cfg.get("init_from"), device, resolve_dtype(cfg["dtype"]))
    window = generation_window(cfg.get("context_length"), loaded)
    settings = cfg["limits"]
    limits = Limits(settings["max_prompt_tokens"] or window - 1, settings["max_tokens"], settings["max_n"])
    model_id = cfg.get("model_name") or default_model_id(loaded.source)
    engine = Engine(loaded, window, device, cfg["max_batch_rows"])
    app = create_app(
        engine, model_facts(loaded, model_id), limits, settings["max_concurrent"], settings["max_body_bytes"], api_key
    )
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    received = stop_on_signals(server)  # before the line below: from then on a signal stops it gracefully
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"serving {model_id} on http://{shown}:{port} (API: /v1/completions, page: /)"
          + (f"; API key required (from ${cfg['api_key_env']})" if api_key else ""), flush=True)
    run_beside_the_model(server, sock, engine)
    print("server stopped", file=sys.stderr, flush=True)
    if received[:1] == [signal.SIGTERM]:
        sys.exit(128 + signal.SIGTERM)  # as a process that SIGTERM ended exits


def stop_on_signals(server) -> list[int]:
    """Ctrl-C and SIGTERM stop ``server`` as uvicorn's own handler does (no new connections, the requests in
    hand finished; a second Ctrl-C at once); the signals received are appended to the list returned. uvicorn
    installs its handler only when it runs on the main thread, which decodes here (run_beside_the_model)."""
    received: list[int] = []

    def on_signal(sig: int, frame) -> None:
        if sig == signal.SIGINT and server.should_exit:
            # The second Ctrl-C: out of the model's loop at once, leaving the HTTP thread (a daemon) to end with
            # the process; uvicorn's own force exit printed a traceback for every task it cancelled.
            raise KeyboardInterrupt
        received.append(sig)
        server.handle_exit(sig, frame)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    return received


def run_beside_the_model(server, sock: socket.socket, engine) -> None:
    """The HTTP server on a thread of its own and the model on this, the main thread, which loaded it (one
    OpenMP thread team: Engine.serve_forever says why), until the server stops."""
    failed: list[BaseException] = []

    def serve_http() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as err:  # raised on the main thread, as when uvicorn ran there
            failed.append(err)
        finally:
            engine.stop()

    http = threading.Thread(target=serve_http, name="gptlab-http", daemon=True)
    http.start()
    try:
        engine.serve_forever()
    except KeyboardInterrupt:
        return  # a second Ctrl-C (stop_on_signals): the requests in hand end unfinished
    http.join()
    if failed:
        raise failed[0]
