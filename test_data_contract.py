"""Tests of dydiff.check_data, the data contract (to be folded into test_dydiff.py)."""

import numpy as np
import pytest
import torch

import dydiff as D

torch.set_num_threads(1)


def contract_data(n_episodes=3, ep_len=10, s_dim=3, a_dim=2, seed=0) -> dict:
    """Data that keeps the contract: episodes of consecutive rows, float32, actions in [-1, 1]."""
    rng = np.random.default_rng(seed)
    n = n_episodes * ep_len
    obs = rng.standard_normal((n, s_dim)).astype(np.float32)
    return {
        "observations": obs,
        "actions": rng.uniform(-1, 1, (n, a_dim)).astype(np.float32),
        "rewards": rng.standard_normal(n).astype(np.float32),
        "next_observations": obs + 0.1,
        "terminals": (np.arange(n) % ep_len == ep_len - 1).astype(np.float32),
        "episode_ids": np.repeat(np.arange(n_episodes), ep_len).astype(np.int64),
    }


def tiny_cfg() -> D.Config:
    return D.Config(updates=2, horizon=4, rollout_batch_size=4, rollout_every=1, dm_steps=1,
                    mlp_width=16, mlp_blocks=1, n_members=2, n_elites=1, dynamics_hidden=8,
                    reward_hidden=8, model_epoch_steps=1, model_max_epochs=1, batch_size=8,
                    dm_batch_size=8, model_batch_size=8)  # fmt: skip


def breakers():
    """(name, key the error must name, change to contract_data()) for each broken rule."""
    nan_obs = lambda d: d["observations"].__setitem__((4, 1), np.nan)  # noqa: E731
    return [
        ("rewards [N, 1]", "rewards", lambda d: d.update(rewards=d["rewards"][:, None])),
        ("missing terminals", "terminals", lambda d: d.pop("terminals")),
        ("missing episode_ids", "episode_ids", lambda d: d.pop("episode_ids")),
        ("observations [N]", "observations", lambda d: d.update(observations=d["rewards"])),
        ("next states of another size", "next_observations",
         lambda d: d.update(next_observations=d["next_observations"][:, :2])),
        ("one action short", "actions", lambda d: d.update(actions=d["actions"][:-1])),
        ("action 1.5", "actions", lambda d: d["actions"].__setitem__((2, 0), 1.5)),
        ("action -1.01", "actions", lambda d: d["actions"].__setitem__((7, 1), -1.01)),
        ("NaN observation", "observations", nan_obs),
        ("infinite reward", "rewards", lambda d: d["rewards"].__setitem__(3, np.inf)),
        ("terminal 0.5", "terminals", lambda d: d["terminals"].__setitem__(0, 0.5)),
        ("terminal 2", "terminals", lambda d: d["terminals"].__setitem__(0, 2)),
        ("integer actions", "actions", lambda d: d.update(actions=d["actions"].astype(np.int64))),
        ("float episode ids", "episode_ids",
         lambda d: d.update(episode_ids=d["episode_ids"].astype(np.float32))),
        ("episode 0 split in two", "episode_ids",
         lambda d: d["episode_ids"].__setitem__(slice(12, 14), 0)),
        ("no rows", "observations", lambda d: d.update({k: v[:0] for k, v in d.items()})),
    ]  # fmt: skip


class TestDataContract:
    def test_data_that_keeps_the_contract_passes(self):
        D.check_data(contract_data())  # no error
        D.check_data(contract_data() | {"extra": np.zeros(5)})  # other keys are ignored
        data = contract_data()
        data["actions"][0] = [-1.0, 1.0]  # the box's edges are inside it
        data = {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in data.items()}
        D.check_data(data)  # float64 is floating point too

    @pytest.mark.parametrize("name, key, change", breakers(), ids=[b[0] for b in breakers()])
    def test_each_broken_rule_is_one_value_error_naming_the_key(self, name, key, change):
        data = contract_data()
        change(data)
        with pytest.raises(ValueError) as info:
            D.check_data(data)
        message = str(info.value)
        assert f"'{key}'" in message, f"the error for {name} must name '{key}': {message!r}"
        assert "expected" in message, f"the error for {name} must say what was expected: {message!r}"
        assert "\n" not in message, f"the error for {name} must be one line: {message!r}"

    @pytest.mark.parametrize("entry", ["trainer", "dynamics", "reward", "diffusion"])
    def test_every_entry_of_data_checks_it(self, entry):
        """Rewards shaped [N, 1] (a common slip) are named at the door, not deep in a matmul."""
        data = contract_data()
        data["rewards"] = data["rewards"][:, None]
        cfg = tiny_cfg()
        call = dict(
            trainer=lambda: D.DyDiffTrainer(cfg, data),
            dynamics=lambda: D.train_dynamics(data, cfg),
            reward=lambda: D.train_reward_model(data, cfg),
            diffusion=lambda: D.train_diffusion(data, cfg),
        )[entry]
        with pytest.raises(ValueError, match=r"data\['rewards'\]: expected shape \[N\]"):
            call()

    def test_every_entry_accepts_contract_data(self):
        data, cfg = contract_data(), tiny_cfg()
        models = dict(dynamics=D.train_dynamics(data, cfg), reward=D.train_reward_model(data, cfg),
                      diffusion=D.train_diffusion(data, cfg))  # fmt: skip
        trainer = D.DyDiffTrainer(cfg, data, models)
        trainer.train(2)
        assert trainer.updates == 2, f"the trainer must run on contract data: {trainer.updates}"
