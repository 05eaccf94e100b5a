"""Locust scenario: image batches sent to TF Serving's predict, over REST and (grpc-* encodings) gRPC.

    locust -f locustfiles/predict.py --host http://127.0.0.1:8501
    locust -f locustfiles/predict.py --host http://127.0.0.1:8501 --headless -u 8 -t 30s \
        --batch-sizes 1,16 --encodings row-orjson,b64-png --records runs/x/requests.csv
    locust -f locustfiles/predict.py --host http://127.0.0.1:8501 --grpc-target 127.0.0.1:8500 \
        --headless -u 4 -t 30s --encodings row-orjson,grpc-tensor-content

Each request goes by its encoding's protocol: REST to --host, gRPC (PredictionService/Predict) to
--grpc-target (default: --host's host, port 8500), one channel per user; both are Locust
requests of the same stats and the same records rows (``protocol`` rest|grpc).

Options (also in the web UI, in ``python locustfiles/predict.py --help``, and as TFSBENCH_* variables): --model-name,
--model-version, --signature-name, --batch-sizes, --encodings, --grpc-target, --images, --pool-size, --warmup,
--arrival closed|poisson|constant, --rate, --think-time, --max-requests, --records, --cell, --encode-inline,
--shape-steps, --step-time. The logic lives in bench/scenario/: the options in options.py, what
a user does in predict_user.py (its gRPC side in grpc_user.py), the Locust event wiring in hooks.py.
"""

from __future__ import annotations

import itertools
from typing import Any

import gevent
from locust import FastHttpUser, LoadTestShape, events, task

from bench.scenario import grpc_user, hooks, options, predict_user
from bench.scenario.process import Scenario
from bench.scenario.relay import project_version

# Read now, before Locust's runner exists: read in a worker's init, git would yield to the
# runner's greenlets (and a spawn message) in the middle of the set-up.
project_version()


@events.init_command_line_parser.add_listener  # type: ignore[untyped-decorator]  # Locust's add_listener is unannotated
def _add_arguments(parser: Any, **_kwargs: Any) -> None:
    options.add_arguments(parser)
    options.bind_loopback_by_default(parser)


@events.init.add_listener  # type: ignore[untyped-decorator]  # Locust's add_listener is unannotated
def _on_init(environment: Any, **_kwargs: Any) -> None:
    # The listeners go first: should hooks.on_init yield, a worker's spawn message handled
    # meanwhile starts users, and their first requests must be recorded too.
    @environment.events.request.add_listener  # type: ignore[untyped-decorator]  # Locust's add_listener is unannotated
    def _on_request(response_time: float, exception: Any, context: Any, **_kwargs: Any) -> None:
        # Every request of ours becomes one records row (bench.store.records), warm-up excluded.
        predict_user.on_request(getattr(environment, hooks.SCENARIO_ATTR, None), response_time, exception, context)

    # Added here, after the runner's own quitting listener, so it fires before that one: users
    # stop and the records close before Locust stops the users and quits the workers itself.
    @environment.events.quitting.add_listener  # type: ignore[untyped-decorator]  # Locust's add_listener is unannotated
    def _on_quitting(environment: Any, **_kwargs: Any) -> None:
        hooks.on_quitting(environment)

    hooks.on_init(environment)


@events.test_start.add_listener  # type: ignore[untyped-decorator]  # Locust's add_listener is unannotated
def _on_test_start(environment: Any, **_kwargs: Any) -> None:
    hooks.on_test_start(environment)


@events.test_stopping.add_listener  # type: ignore[untyped-decorator]  # Locust's add_listener is unannotated
def _on_test_stopping(environment: Any, **_kwargs: Any) -> None:
    hooks.on_test_stopping(environment)


@events.test_stop.add_listener  # type: ignore[untyped-decorator]  # Locust's add_listener is unannotated
def _on_test_stop(environment: Any, **_kwargs: Any) -> None:
    hooks.on_test_stop(environment)


class PredictUser(FastHttpUser):
    """Sends pre-encoded batches; closed model back to back (plus --think-time), open model on schedule."""

    host = "http://127.0.0.1:8501"
    _spawned = itertools.count()  # this process's users in spawn order: which replica each keeps

    def __init__(self, environment: Any) -> None:
        # --host URL1,URL2: each user keeps one replica (its own client), chosen before the client is built.
        scenario = getattr(environment, hooks.SCENARIO_ATTR, None)
        self.host = predict_user.user_host(self.host, next(PredictUser._spawned), scenario)
        super().__init__(environment)

    def wait_time(self) -> float:
        scenario = self.scenario
        return scenario.config.arrival.think_time_s if scenario is not None else 0.0

    def on_start(self) -> None:
        self.scenario: Scenario | None = getattr(self.environment, hooks.SCENARIO_ATTR, None)
        if self.scenario is None:
            return  # bad options: on_test_start showed why and stops the run; predict() idles till then
        self.state = predict_user.new_user_state(self.scenario, self.host)
        config = self.scenario.config
        self.grpc = grpc_user.GrpcSession(config.grpc_address) if "grpc" in config.protocols else None
        predict_user.warm_up(self.host, self.scenario, self.state, self.grpc)

    def on_stop(self) -> None:
        session: grpc_user.GrpcSession | None = getattr(self, "grpc", None)
        if session is not None:
            session.close()

    @task
    def predict(self) -> None:
        scenario = self.scenario
        if scenario is None or not predict_user.claim_send(scenario):
            # Idle until the stop ends this user (a user ended by StopUser races Locust's stop).
            if scenario is not None:
                hooks.on_sends_done(self.environment)
            gevent.sleep(0.1)
            return
        predict_user.predict_once(
            self.client, scenario, self.state, gevent.sleep, self.grpc, self.environment.events.request
        )


class StepShape(LoadTestShape):
    """--shape-steps batch=1,4,16 or rate=10,20,40: -u users for --step-time per step, then stop."""

    use_common_options = True

    def tick(self) -> tuple[int, float] | None:
        return hooks.shape_tick(self)


if __name__ == "__main__":
    # `locust -f locustfiles/predict.py --help` prints its help before importing the locustfile,
    # so it cannot list the options above (Locust issue #2917). This prints the whole help with
    # them; any other arguments run Locust on this file.
    import sys

    from locust import main as locust_main
    from locust.argument_parser import get_parser

    if {"-h", "--help"} & set(sys.argv[1:]):
        get_parser().print_help()
        sys.exit(0)
    sys.argv = ["locust", "-f", __file__, *sys.argv[1:]]
    sys.exit(locust_main.main())  # type: ignore[no-untyped-call]  # Locust's main() is unannotated
