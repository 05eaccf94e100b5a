"""Locust scenario: image batches posted to a TF Serving REST predict endpoint.

    locust -f locustfiles/predict.py --host http://127.0.0.1:8501
    locust -f locustfiles/predict.py --host http://127.0.0.1:8501 --headless -u 8 -t 30s \
        --batch-sizes 1,16 --encodings row-orjson,b64-png --records runs/x/requests.csv

Options (also in the web UI, in ``python locustfiles/predict.py --help``, and as TFSBENCH_* variables): --model-name,
--model-version, --signature-name, --batch-sizes, --encodings, --images, --pool-size, --warmup,
--arrival closed|poisson|constant, --rate, --think-time, --max-requests, --records, --cell, --encode-inline,
--shape-steps, --step-time. The logic lives in bench/scenario/: the options in options.py, what
a user does in predict_user.py, the Locust event wiring in hooks.py.
"""

from __future__ import annotations

from typing import Any

import gevent
from locust import FastHttpUser, LoadTestShape, events, task

from bench.scenario import hooks, options, predict_user
from bench.scenario.process import Scenario


@events.init_command_line_parser.add_listener  # type: ignore[untyped-decorator]  # Locust's add_listener is unannotated
def _add_arguments(parser: Any, **_kwargs: Any) -> None:
    options.add_arguments(parser)
    options.bind_loopback_by_default(parser)


@events.init.add_listener  # type: ignore[untyped-decorator]  # Locust's add_listener is unannotated
def _on_init(environment: Any, **_kwargs: Any) -> None:
    hooks.on_init(environment)

    @environment.events.request.add_listener  # type: ignore[untyped-decorator]  # Locust's add_listener is unannotated
    def _on_request(response_time: float, exception: Any, context: Any, **_kwargs: Any) -> None:
        # Every request of ours becomes one records row (bench.store.records), warm-up excluded.
        predict_user.on_request(getattr(environment, hooks.SCENARIO_ATTR, None), response_time, exception, context)

    # Added here, after the runner's own quitting listener, so it fires before that one: users
    # stop and the records close before Locust stops the users and quits the workers itself.
    @environment.events.quitting.add_listener  # type: ignore[untyped-decorator]  # Locust's add_listener is unannotated
    def _on_quitting(environment: Any, **_kwargs: Any) -> None:
        hooks.on_quitting(environment)


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
    """Posts pre-encoded batches; closed model back to back (plus --think-time), open model on schedule."""

    host = "http://127.0.0.1:8501"

    def wait_time(self) -> float:
        scenario = self.scenario
        return scenario.config.arrival.think_time_s if scenario is not None else 0.0

    def on_start(self) -> None:
        self.scenario: Scenario | None = getattr(self.environment, hooks.SCENARIO_ATTR, None)
        if self.scenario is None:
            return  # bad options: on_test_start showed why and stops the run; predict() idles till then
        self.state = predict_user.new_user_state(self.scenario)
        predict_user.warm_up(self.host, self.scenario, self.state)

    @task
    def predict(self) -> None:
        scenario = self.scenario
        if scenario is None or not predict_user.claim_send(scenario):
            # Idle until the stop ends this user (a user ended by StopUser races Locust's stop).
            if scenario is not None:
                hooks.on_sends_done(self.environment)
            gevent.sleep(0.1)
            return
        predict_user.predict_once(self.client, scenario, self.state, gevent.sleep)


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
