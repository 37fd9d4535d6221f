"""Rewards inside RLHF loops: a reward function for TRL's ``GRPOTrainer`` (and ``RLOOTrainer``) ``reward_funcs``.

Example::

    from trl import GRPOConfig, GRPOTrainer
    from rewardlab.inference.rlhf import RewardFunction

    reward = RewardFunction.load("runs/quickstart")               # in this process (a model or an ensemble folder)
    reward = RewardFunction.remote("http://127.0.0.1:8000")       # or through a running `rewardlab serve`
    trainer = GRPOTrainer(model=policy, reward_funcs=[reward], args=GRPOConfig(...), train_dataset=prompts)

An ensemble folder gives its combined reward (``reward: mean_minus_std`` in its manifest, or ``reward=`` here: a
conservative reward against over-optimisation).

TRL calls it with the prompts and completions (plain strings, or lists of messages for conversational datasets,
rendered with the reward model's chat template) and logs its rewards as ``rewards/<__name__>/mean``.

The saved folder is also a plain sequence classifier, so TRL can load it itself (``reward_funcs="runs/quickstart"``),
but TRL then scores ``prompt + completion`` as one text with no special tokens added, which is not how rewardlab
encoded it in training (BOS/``[CLS]`` in front, EOS/``[SEP]`` after plain-text responses). This function encodes
exactly as training did.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from rewardlab.errors import ScoringError
from rewardlab.inference.scorer import RewardModel, Text, load_scorer


class RemoteRewardModel:
    """A running ``rewardlab serve``, scored over HTTP (``POST /score``) with the standard library."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 300.0):
        self.url, self.api_key, self.timeout = url.rstrip("/"), api_key, timeout

    def score(self, prompts: list[Text], responses: list[Text], normalize: bool = False) -> list[float]:
        body = json.dumps({"prompts": prompts, "responses": responses, "normalize": normalize}).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(f"{self.url}/score", data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())["rewards"]
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")
            raise ScoringError(f"{self.url}/score answered {e.code}: {detail}") from None


class RewardFunction:
    """``f(prompts, completions, **kwargs) -> list[float]``, TRL's reward-function protocol.

    Args:
        reward_model: a :class:`~rewardlab.inference.scorer.RewardModel`, or a :class:`RemoteRewardModel`.
        normalize: return ``(r − reward_mean) / reward_std`` with the statistics saved at training time.
        name: what TRL's logs call this reward (``__name__``).
    """

    def __init__(self, reward_model: RewardModel | RemoteRewardModel, normalize: bool = False, name: str = "rewardlab"):
        self.reward_model, self.normalize, self.__name__ = reward_model, normalize, name

    @classmethod
    def load(cls, path: str, normalize: bool = False, name: str = "rewardlab", **options):
        """Backed by the model or ensemble folder at ``path`` (:meth:`rewardlab.inference.scorer.RewardModel.load`;
        ``options`` go to it: ``reward``, ``std_weight``, ``device``, ...)."""
        return cls(load_scorer(path, **options), normalize, name)

    @classmethod
    def remote(cls, url: str, api_key: str | None = None, normalize: bool = False, name: str = "rewardlab"):
        """Backed by a server started with ``rewardlab serve`` at ``url`` (e.g. ``http://127.0.0.1:8000``)."""
        return cls(RemoteRewardModel(url, api_key), normalize, name)

    def __call__(self, prompts: list[Text], completions: list[Text], **kwargs) -> list[float]:
        # TRL also passes completion ids, dataset columns and trainer hooks; the reward needs only the texts.
        return self.reward_model.score(list(prompts), list(completions), normalize=self.normalize)
