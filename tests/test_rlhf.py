import threading

import pytest
import torch
from datasets import Dataset
from transformers import LlamaConfig, LlamaForCausalLM
from trl import GRPOConfig, GRPOTrainer

from rewardlab.config import ModelSettings
from rewardlab.errors import ScoringError
from rewardlab.inference.rlhf import RewardFunction
from rewardlab.inference.scorer import RewardModel
from rewardlab.inference.server import create_app
from rewardlab.models.loading import load_backbone, tiny_tokenizer
from rewardlab.models.saved import save_reward_model


@pytest.fixture(scope="module")
def reward_dir(tmp_path_factory):
    backbone = load_backbone(ModelSettings(name="tiny-llama"), seed=1)
    info = {"reward_mean": 0.01, "reward_std": 0.02, "max_length": 64}
    return save_reward_model(backbone.model, backbone.tokenizer, tmp_path_factory.mktemp("rm"), {}, info)


class CountingReward(RewardFunction):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = []

    def __call__(self, prompts, completions, **kwargs):
        rewards = super().__call__(prompts, completions, **kwargs)
        self.calls.append((list(prompts), list(completions), rewards))
        return rewards


def tiny_policy():
    tokenizer = tiny_tokenizer(encoder=False)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    return LlamaForCausalLM(config), tokenizer


@pytest.mark.parametrize("conversational", [False, True])
def test_grpo_trains_two_steps_on_rewardlab_rewards(reward_dir, tmp_path, conversational):
    """GRPOTrainer takes the reward function in ``reward_funcs``, calls it with prompts and completions (plain or
    conversational), and logs its rewards; the saved folder also works as a reward model TRL loads itself."""
    policy, tokenizer = tiny_policy()
    prompts = ["Say hi:", "Count to three:", "Name a fruit:", "Be kind:"]
    if conversational:
        prompts = [[{"role": "user", "content": p}] for p in prompts]
    reward = CountingReward(RewardModel.load(str(reward_dir)), name="rewardlab")
    args = GRPOConfig(
        output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=2, num_generations=2,
        max_completion_length=8, learning_rate=1e-3, logging_steps=1, use_cpu=True, bf16=False,
        report_to=[], save_strategy="no", seed=0,
    )
    trainer = GRPOTrainer(
        model=policy, reward_funcs=[reward, str(reward_dir)], args=args,
        train_dataset=Dataset.from_dict({"prompt": prompts}), processing_class=tokenizer,
    )
    trainer.train()

    assert len(reward.calls) == 2
    for called_prompts, completions, rewards in reward.calls:
        assert len(called_prompts) == len(completions) == len(rewards) == 2
        assert isinstance(completions[0], list if conversational else str)
        assert rewards == pytest.approx(RewardModel.load(str(reward_dir)).score(called_prompts, completions), abs=1e-6)
    logs = [entry for entry in trainer.state.log_history if "rewards/rewardlab/mean" in entry]
    assert len(logs) == 2
    assert f"rewards/{reward_dir.name}/mean" in logs[0]  # TRL's own loading of the saved folder


def test_normalized_reward_function(reward_dir):
    rm = RewardModel.load(str(reward_dir))
    raw = RewardFunction(rm)(["Q:"], [" yes"], completion_ids=[[1]])
    assert RewardFunction(rm, normalize=True)(["Q:"], [" yes"]) == pytest.approx([(raw[0] - 0.01) / 0.02])


def test_remote_reward_function_matches_local(reward_dir):
    """The same rewards through a real ``uvicorn`` server on loopback, with an API key."""
    import uvicorn

    class Server(uvicorn.Server):
        """Sets ``starting_done`` once its start-up has ended: listening, or failed."""

        def __init__(self, config):
            super().__init__(config)
            self.starting_done = threading.Event()

        async def startup(self, sockets=None):
            try:
                await super().startup(sockets)
            finally:
                self.starting_done.set()

    rm = RewardModel.load(str(reward_dir))
    server = Server(uvicorn.Config(create_app(rm, api_key="k3y"), host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        assert server.starting_done.wait(20) and server.started, "the server did not start"
        port = server.servers[0].sockets[0].getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        prompts = ["Q: 2+2?", [{"role": "user", "content": "hi"}]]
        completions = [" 4", [{"role": "assistant", "content": "hello"}]]
        remote = RewardFunction.remote(url, api_key="k3y")(prompts, completions)
        assert remote == pytest.approx(rm.score(prompts, completions), abs=1e-6)
        assert RewardFunction.remote(url, api_key="k3y", normalize=True)(prompts, completions) == pytest.approx(
            rm.score(prompts, completions, normalize=True), abs=1e-5)
        with pytest.raises(ScoringError, match="401"):
            RewardFunction.remote(url, api_key="wrong")(prompts, completions)
    finally:
        server.should_exit = True
        thread.join(10)
