"""What the trainer workers (2 processes) and the single-process references share."""

from __future__ import annotations

from pathlib import Path

from openm1.rl import RLConfig
from openm1.train import TrainConfig
from tests.train.helpers import pattern_documents, small_model

STEPS = 5
SAVE_AT = 3


def train_model():  # noqa: ANN201
    return small_model(seed=0)


def train_data() -> list:
    return pattern_documents(48, seed=3)


def train_config(**kw) -> TrainConfig:  # noqa: ANN003
    """5 steps of 2 packed rows (one per rank on 2), checkpoint at step 3, cosine decay, clipping."""
    base = dict(
        steps=STEPS,
        lr=1e-2,
        min_lr=1e-3,
        eps=1e-8,
        seq_len=40,
        grad_accum=2,
        max_grad_norm=0.5,
        save_every=SAVE_AT,
        keep_checkpoints=3,
        progress=False,
        plot=False,
    )
    return TrainConfig(**(base | kw))


def lowercase_share(prompt, response, reference, **meta):  # noqa: ANN001, ANN003, ANN201
    """A reward with spread on random text: the share of ASCII lowercase letters."""
    from openm1.rewards.base import RewardResult

    return RewardResult(sum(c.isascii() and c.islower() for c in response) / max(1, len(response)))


def rl_config(**kw) -> RLConfig:  # noqa: ANN003
    """3 prompts x 2 samples (2 prompts on rank 0, 1 on rank 1), 4 updates of random rows: minibatches
    of 2, 2, 1 and 1 rows, so a rank sometimes has none (its forward is a dummy of weight 0)."""
    base = dict(
        group_size=2,
        prompts_per_step=3,
        length_stages=[6],
        minibatches=4,
        minibatch_by_group=False,
        lr=1e-2,
        adam_eps=1e-8,
        grad_clip=0.5,
        progress=False,
        plots=False,
        tensorboard=False,
        repetition_window=None,
    )
    return RLConfig(**(base | kw))


def rl_model():  # noqa: ANN201
    from tests.distributed.common import build_model

    return build_model()


def rl_run(out: Path, save: bool = False, **kw) -> dict:  # noqa: ANN003
    """One RLTrainer step: its rollouts (as every rank holds them), metrics, the policy after it (the
    rollout copy, refreshed from the sharded policy); with ``save``, a checkpoint in ``out``."""
    from openm1.generate.tokenizer import ByteTokenizer
    from openm1.rl import RLTrainer
    from openm1.rl.curriculum import Task

    tasks = [Task(f"say something {i}", None, lowercase_share, "toy", "rule") for i in range(8)]
    trainer = RLTrainer(rl_model(), ByteTokenizer(512), tasks, rl_config(**kw), out)
    sample, seen = trainer._generate_and_score, {}

    def recorded(*args):  # noqa: ANN002, ANN202
        ro, t_rollout, t_reward = sample(*args)
        seen.update(responses=ro.response_ids, rewards=ro.rewards, prompts=ro.prompt_index)
        return ro, t_rollout, t_reward

    trainer._generate_and_score = recorded
    metrics = trainer.train_step()
    if save:
        trainer.save_checkpoint()
    state = {k: v.detach().cpu().clone() for k, v in trainer.rollout_model.state_dict().items()}
    return {"metrics": metrics, "state": state, "rollouts": seen}
