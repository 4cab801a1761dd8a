"""The syllabus: every paper seminal covers, by number, and where its code, notes and results live.

A paper is *implemented* when `seminal.papers.<area>.<slug>` exists (hyphens become underscores); it has *notes* when
`docs/papers/NN-slug.md` exists; its claim is *verified* when `results/<slug>.json` says it passed.
Nothing here is typed by hand twice: `seminal list`, the report and the README table all read this.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from seminal.core.errors import SeminalError
from seminal.core.paths import DOCS_DIR, results_dir


@dataclass(frozen=True)
class Entry:
    number: int
    slug: str
    title: str
    citation: str
    area: str

    @property
    def package(self) -> str:
        """The area's package, `seminal.papers.<area>`: the paper and its area's shared plumbing live there."""
        return "seminal.papers." + self.area.replace("-", "_")

    @property
    def module_name(self) -> str:
        return f"{self.package}.{self.slug.replace('-', '_')}"

    @property
    def module_path(self) -> str:
        """The module's file, relative to the checkout: `src/seminal/papers/<area>/<slug>.py`."""
        return "src/" + self.module_name.replace(".", "/") + ".py"

    @property
    def implemented(self) -> bool:
        try:
            return importlib.util.find_spec(self.module_name) is not None
        except ModuleNotFoundError:  # the area's package does not exist yet
            return False

    @property
    def notes_path(self) -> Path:
        return DOCS_DIR / "papers" / f"{self.number:02d}-{self.slug}.md"

    def load(self) -> ModuleType:
        if not self.implemented:
            what = "notes only" if self.notes_path.exists() else "planned"
            raise SeminalError(
                f"paper {self.number} ({self.slug}) has no implementation yet ({what}); "
                "`seminal list` shows which papers run"
            )
        try:
            return importlib.import_module(self.module_name)
        except ModuleNotFoundError as e:  # a paper whose optional extra is not installed
            if not e.name or e.name.split(".")[0] == "seminal":
                raise
            extra = _EXTRAS.get(e.name.split(".")[0])
            fix = f"pip install 'seminal[{extra}]'" if extra else f"install {e.name}"
            raise SeminalError(
                f"paper {self.number} ({self.slug}) needs {e.name}, which is not installed: {fix}") from e

    def result(self, results: Path | None = None, preset: str = "quick") -> dict | None:
        """The record `seminal reproduce` wrote for this paper and preset, if any."""
        name = f"{self.slug}.json" if preset == "quick" else f"{self.slug}.{preset}.json"
        path = (results or results_dir()) / name
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            return None

    def records(self, results: Path | None = None) -> list[dict]:
        """Every record of this paper: quick first, then full, then any other preset's (e.g. an ablation)."""
        folder = results or results_dir()
        others = sorted(p.name[len(self.slug) + 1:-len(".json")] for p in folder.glob(f"{self.slug}.*.json"))
        presets = ["quick"] + (["full"] if "full" in others else []) + [o for o in others if o != "full"]
        return [r for r in (self.result(folder, p) for p in presets) if r is not None]

    def status(self, results: Path | None = None) -> str:
        """claim verified: every recorded preset passes; claim failing: one of them fails."""
        records = self.records(results)
        if self.implemented:
            if not records:
                return "implemented"
            return "claim verified" if all(r.get("passed") for r in records) else "claim failing"
        return "notes only" if self.notes_path.exists() else "planned"


_EXTRAS = {"gymnasium": "rl", "Box2D": "rl", "pygame": "rl", "mujoco": "mujoco", "ale_py": "atari",
           "stable_baselines3": "bench", "mpe2": "marl", "pettingzoo": "marl",
           "ray": "distributed"}
"""Optional third-party modules and the extra that installs each."""

_E = Entry
SYLLABUS: tuple[Entry, ...] = (
    _E(1, "backprop", "Backpropagation (MLP in NumPy)", "Rumelhart, Hinton & Williams 1986", "foundations"),
    _E(2, "lenet5", "LeNet-5", "LeCun, Bottou, Bengio & Haffner 1998", "foundations"),
    _E(3, "weight-decay", "Weight decay", "Krogh & Hertz 1991", "foundations"),
    _E(4, "relu", "Rectified linear units", "Glorot, Bordes & Bengio 2011", "optimisation"),
    _E(5, "adam", "Adam", "Kingma & Ba 2014, arXiv:1412.6980", "optimisation"),
    _E(6, "dropout", "Dropout", "Srivastava et al. 2014, JMLR 15", "optimisation"),
    _E(7, "dqn", "Deep Q-Network", "Mnih et al. 2015, Nature 518", "rl"),
    _E(8, "a2c", "Advantage actor-critic (A2C/A3C)", "Mnih et al. 2016, arXiv:1602.01783", "rl"),
    _E(9, "gae", "Generalized advantage estimation", "Schulman et al. 2016, arXiv:1506.02438", "rl"),
    _E(10, "trpo", "Trust region policy optimization", "Schulman et al. 2015, arXiv:1502.05477", "rl"),
    _E(11, "ppo", "Proximal policy optimization", "Schulman et al. 2017, arXiv:1707.06347", "rl"),
    _E(12, "ddpg", "Deep deterministic policy gradient", "Lillicrap et al. 2016, arXiv:1509.02971", "rl"),
    _E(13, "td3", "Twin delayed DDPG (TD3)", "Fujimoto, van Hoof & Meger 2018, arXiv:1802.09477", "rl"),
    _E(14, "sac", "Soft actor-critic", "Haarnoja et al. 2018, arXiv:1801.01290 / 1812.05905", "rl"),
    _E(15, "prioritized-replay", "Prioritized experience replay", "Schaul et al. 2016, arXiv:1511.05952", "rl"),
    _E(16, "impala", "IMPALA and V-trace", "Espeholt et al. 2018, arXiv:1802.01561", "distributed-rl"),
    _E(17, "ape-x", "Ape-X distributed prioritized replay", "Horgan et al. 2018, arXiv:1803.00933", "distributed-rl"),
    _E(18, "r2d2", "R2D2 recurrent replay", "Kapturowski et al. 2019, ICLR", "distributed-rl"),
    _E(19, "seed-rl", "SEED RL", "Espeholt et al. 2020, arXiv:1910.06591", "distributed-rl"),
    _E(20, "rllib", "RLlib comparison", "Liang et al. 2018, arXiv:1712.09381", "distributed-rl"),
    _E(21, "ray-distributed", "Distributed PPO/SAC on Ray", "Moritz et al. 2018, arXiv:1712.05889", "distributed-rl"),
    _E(23, "maddpg", "MADDPG", "Lowe et al. 2017, arXiv:1706.02275", "multi-agent"),
    _E(24, "qmix", "QMIX", "Rashid et al. 2018, arXiv:1803.11485", "multi-agent"),
    _E(25, "mappo", "MAPPO", "Yu et al. 2022, arXiv:2103.01955", "multi-agent"),
    _E(26, "alexnet", "AlexNet", "Krizhevsky, Sutskever & Hinton 2012, NeurIPS", "vision"),
    _E(27, "batchnorm", "Batch normalization", "Ioffe & Szegedy 2015, arXiv:1502.03167", "vision"),
    _E(28, "resnet18", "ResNet-18", "He et al. 2016, arXiv:1512.03385", "vision"),
    _E(29, "rnn", "Vanilla RNN", "Elman 1990; Rumelhart et al. 1986", "sequence"),
    _E(30, "lstm", "LSTM", "Hochreiter & Schmidhuber 1997", "sequence"),
    _E(31, "word2vec", "Word2Vec", "Mikolov et al. 2013, arXiv:1301.3781", "sequence"),
    _E(32, "seq2seq", "Sequence to sequence", "Sutskever, Vinyals & Le 2014, arXiv:1409.3215", "sequence"),
    _E(33, "bahdanau", "Additive attention", "Bahdanau, Cho & Bengio 2015, arXiv:1409.0473", "sequence"),
    _E(34, "transformer", "Transformer", "Vaswani et al. 2017, arXiv:1706.03762", "sequence"),
    _E(35, "bert-mini", "BERT-mini and fine-tuning", "Devlin et al. 2019, arXiv:1810.04805", "sequence"),
    _E(36, "vit", "Vision Transformer", "Dosovitskiy et al. 2021, arXiv:2010.11929", "vision"),
    _E(37, "moe", "Sparsely-gated mixture of experts", "Shazeer et al. 2017, arXiv:1701.06538", "sequence"),
    _E(38, "mamba", "Mamba selective state spaces", "Gu & Dao 2023, arXiv:2312.00752", "sequence"),
    _E(39, "flash-attention", "FlashAttention", "Dao et al. 2022, arXiv:2205.14135", "systems"),
    _E(40, "lora", "LoRA", "Hu et al. 2021, arXiv:2106.09685", "systems"),
    _E(41, "vae", "Variational autoencoder", "Kingma & Welling 2014, arXiv:1312.6114", "generative"),
    _E(42, "dcgan", "DCGAN", "Radford, Metz & Chintala 2016, arXiv:1511.06434", "generative"),
    _E(43, "ddpm", "Denoising diffusion (DDPM)", "Ho, Jain & Abbeel 2020, arXiv:2006.11239", "generative"),
    _E(44, "wavenet", "WaveNet", "van den Oord et al. 2016, arXiv:1609.03499", "generative"),
    _E(45, "grasping", "Hand-eye coordination for grasping", "Levine et al. 2016, arXiv:1603.02199", "robotics"),
    _E(46, "domain-randomization", "Domain randomization", "Tobin et al. 2017, arXiv:1703.06907", "robotics"),
)

_BY_NUMBER = {e.number: e for e in SYLLABUS}
_BY_SLUG = {e.slug: e for e in SYLLABUS}


def resolve(paper_id: str | int) -> Entry:
    """Find an entry by number (`3`) or slug (`weight-decay`, `weight_decay`)."""
    text = str(paper_id).strip().lower()
    if text.isdigit() and int(text) in _BY_NUMBER:
        return _BY_NUMBER[int(text)]
    slug = text.replace("_", "-")
    if slug in _BY_SLUG:
        return _BY_SLUG[slug]
    close = difflib.get_close_matches(slug, list(_BY_SLUG), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise SeminalError(f"unknown paper '{paper_id}'{hint}; `seminal list` shows all papers by number and slug")


def implemented() -> list[Entry]:
    return [e for e in SYLLABUS if e.implemented]
