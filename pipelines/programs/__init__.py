"""Shipped DSPy programs: examples of the task contract, never assumed by the pipeline.

A program is any `dspy.Module` named by `_target_` in `conf/program/`. A program config with a
`signature: null` key gets the task's contract (its fields, types, label sets and instructions) as a
dict; a user's program may take it or ignore it.
"""

from pipelines.programs.asynchronous import is_async, runnable_sync
from pipelines.programs.draft_verify import DraftThenVerify
from pipelines.programs.extract_then_classify import ExtractThenClassify
from pipelines.programs.math_agent import MathAgent
from pipelines.programs.neighbour_tally import NeighbourTally
from pipelines.programs.neighbour_vote import NeighbourVote
from pipelines.programs.retrieved_demos import RetrievedDemos
from pipelines.programs.single_step import SingleStep
from pipelines.programs.vote_or_predict import VoteOrPredict

__all__ = [
    "DraftThenVerify",
    "ExtractThenClassify",
    "MathAgent",
    "NeighbourTally",
    "NeighbourVote",
    "RetrievedDemos",
    "SingleStep",
    "VoteOrPredict",
    "build_program",
    "is_async",
    "runnable_sync",
]


def build_program(program_cfg, contract):
    """Instantiate `program_cfg`, handing it the task's contract where the config asks for `signature`.

    Returns (program, resolved program config): the config, with the contract filled in, is what the
    logged model stores to rebuild the program at load time.
    """
    from omegaconf import OmegaConf

    from pipelines.config import instantiate  # what the logged model rebuilds it with, without Hydra

    resolved = OmegaConf.to_container(program_cfg, resolve=True)
    if "signature" in resolved and resolved["signature"] is None:
        resolved["signature"] = contract.to_dict()
    return runnable_sync(instantiate(resolved)), resolved
