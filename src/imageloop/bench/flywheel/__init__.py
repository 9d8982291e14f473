"""``imageloop bench flywheel``: simulated users through the real service, with and without the training loop.

See :mod:`imageloop.bench.flywheel.run` for how a run goes, :mod:`.cohort` for the cohort file format,
:mod:`.users` for how simulated users behave and :mod:`.arms` for the arms.
"""

from imageloop.bench.flywheel.arms import ARMS, DEFAULT_ARMS, Arm, parse_arms
from imageloop.bench.flywheel.cohort import DEFAULT_COHORT, Cohort, load_cohort, parse_cohort
from imageloop.bench.flywheel.report import ArmWeek, difference_interval, wilson
from imageloop.bench.flywheel.run import FlywheelConfig, FlywheelRun, result_payload, run_flywheel

__all__ = ["ARMS", "DEFAULT_ARMS", "DEFAULT_COHORT", "Arm", "ArmWeek", "Cohort", "FlywheelConfig", "FlywheelRun",
           "difference_interval", "load_cohort", "parse_arms", "parse_cohort", "result_payload", "run_flywheel",
           "wilson"]
