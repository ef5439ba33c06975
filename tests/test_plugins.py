"""Plugin loading: built-ins, entry points, AJ_LOAD_PLUGINS, and plugins that are broken on purpose.

Third-party plugins are simulated without pip: a fake distribution (``*.dist-info`` with an
``entry_points.txt`` in group ``autojudge``) and its modules are written to ``tmp_path``, which
is put on ``sys.path``, exactly what ``importlib.metadata`` scans for installed packages.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from autojudge.core.task import Example, Task, TaskValidationError, validate_task
from autojudge.plugins import manager
from autojudge.plugins.toy import ToyArithmeticTask

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_PLUGIN = REPO / "tests" / "plugins" / "ajspec-example"

# -- fake third-party plugins ------------------------------------------------------------------

GOOD = '''
import click
from autojudge.core.task import Example, Task
from autojudge.plugins import hookimpl


class GoodTask(Task):
    name = "good-task"
    description = "A well-formed task from a third-party plugin."

    def load(self, split, *, data_dir=None, limit=None):
        return [Example(id="0", question="say 3", reference=3)][:limit]

    def build_messages(self, example):
        return [{"role": "user", "content": example.question}]

    def extract_answer(self, response):
        return response.strip() or None

    def equivalent(self, a, b, example):
        return a is not None and a == b

    def is_correct(self, answer, example):
        return answer == str(example.reference)


@hookimpl
def register_tasks(register):
    register(GoodTask())


@hookimpl
def register_commands(cli):
    @cli.command(name="good-hello")
    def hello():
        """Say hello from the good plugin."""
        click.echo("hello from good plugin")
'''

IMPORT_ERROR = """
raise RuntimeError("boom at import time")
"""

SYS_EXIT = """
import sys
sys.exit(3)
"""

MALFORMED = """
from autojudge.core.task import Example, Task
from autojudge.plugins import hookimpl


class Base(Task):
    description = "malformed on purpose"

    def load(self, split, *, data_dir=None, limit=None):
        return []

    def build_messages(self, example):
        return []

    def extract_answer(self, response):
        return None

    def equivalent(self, a, b, example):
        return False

    def is_correct(self, answer, example):
        return False


class BadName(Base):
    name = "Bad Name!"


class NoDescription(Base):
    name = "no-description"
    description = "  "


class BadStops(Base):
    name = "bad-stops"
    stop_sequences = "###"


class Fine(Base):
    name = "malformed-but-this-one-is-fine"


@hookimpl
def register_tasks(register):
    register({"name": "a-dict"})
    register(Fine)  # the class, not an instance
    register(BadName())
    register(NoDescription())
    register(BadStops())
    register(Fine())
"""

HOOK_RAISES = """
from autojudge.plugins import hookimpl


@hookimpl
def register_tasks(register):
    raise ValueError("exploded inside register_tasks")


@hookimpl
def register_commands(cli):
    raise KeyError("exploded inside register_commands")
"""

BAD_SIGNATURE = """
from autojudge.plugins import hookimpl


@hookimpl
def register_tasks(registry):  # the hook argument is called `register`
    pass
"""

TYPO_HOOK = """
from autojudge.plugins import hookimpl


@hookimpl
def register_task(register):  # misspelt hook name
    pass
"""

NO_HOOKS = """
def register_tasks(register):  # forgot @hookimpl
    pass
"""

DUPLICATE = """
from autojudge.plugins import hookimpl
from autojudge.plugins.toy import ToyArithmeticTask


class Impostor(ToyArithmeticTask):
    description = "Registers a name a built-in already has."


@hookimpl
def register_tasks(register):
    register(Impostor())
"""


def make_distribution(root: Path, dist: str, entry_points: dict[str, str], modules: dict[str, str]) -> None:
    """Write an installed-looking distribution ``dist`` (dist-info + modules) into ``root``."""
    info = root / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n", encoding="utf-8")
    eps = "[autojudge]\n" + "".join(f"{name} = {value}\n" for name, value in entry_points.items())
    (info / "entry_points.txt").write_text(eps, encoding="utf-8")
    for module, source in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")


#: entry-point name -> (distribution, entry-point value, module name, module source)
FAKE_PLUGINS: dict[str, tuple[str, str, str, str]] = {
    "good": ("ajspec-good", "ajt_good", "ajt_good", GOOD),
    "importboom": ("ajspec-importboom", "ajt_importboom", "ajt_importboom", IMPORT_ERROR),
    "sysexit": ("ajspec-sysexit", "ajt_sysexit", "ajt_sysexit", SYS_EXIT),
    "missingattr": ("ajspec-missingattr", "ajt_good:no_such_object", "", ""),
    "malformed": ("ajspec-malformed", "ajt_malformed", "ajt_malformed", MALFORMED),
    "hookraises": ("ajspec-hookraises", "ajt_hookraises", "ajt_hookraises", HOOK_RAISES),
    "badsig": ("ajspec-badsig", "ajt_badsig", "ajt_badsig", BAD_SIGNATURE),
    "typo": ("ajspec-typo", "ajt_typo", "ajt_typo", TYPO_HOOK),
    "nohooks": ("ajspec-nohooks", "ajt_nohooks", "ajt_nohooks", NO_HOOKS),
    "duplicate": ("ajspec-duplicate", "ajt_duplicate", "ajt_duplicate", DUPLICATE),
}
BROKEN = sorted(set(FAKE_PLUGINS) - {"good"})


def write_fake_plugins(root: Path, names: list[str] | None = None) -> None:
    for ep_name in names or FAKE_PLUGINS:
        dist, value, module, source = FAKE_PLUGINS[ep_name]
        make_distribution(root, dist, {ep_name: value}, {module: source} if module else {})


@pytest.fixture
def isolated_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No AJ_LOAD_PLUGINS, and a registry rebuilt from scratch after the test."""
    monkeypatch.delenv(manager.LOAD_PLUGINS_ENV, raising=False)
    modules_before = set(sys.modules)
    yield
    for name in set(sys.modules) - modules_before:
        if name.startswith(("ajt_", "ajspec_example")):
            del sys.modules[name]
    manager._registry = None  # the next caller loads the real plugins again


@pytest.fixture
def fake_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_registry: None) -> Path:
    root = tmp_path / "site"
    root.mkdir()
    write_fake_plugins(root)
    monkeypatch.syspath_prepend(str(root))
    return root


def load_recording() -> tuple[manager.PluginRegistry, list[str]]:
    """Reload every plugin and return the registry and the texts of the PluginWarnings it raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reg = manager.load_plugins(reload=True)
    return reg, [str(w.message) for w in caught if issubclass(w.category, manager.PluginWarning)]


def warnings_about(messages: list[str], plugin: str) -> list[str]:
    return [m for m in messages if f"'{plugin}'" in m]


# -- built-ins -----------------------------------------------------------------------------------


def test_builtin_toy_task_through_the_library_api(isolated_registry: None) -> None:
    task = manager.get_task("toy-arith")
    assert isinstance(task, ToyArithmeticTask)
    assert manager.load_plugins().task_owner["toy-arith"] == "builtin:toy"
    rows = task.load(task.eval_split, limit=5)
    assert len(rows) == 5 and all(isinstance(r, Example) for r in rows)
    assert [r.id for r in rows] == [r.id for r in task.load(task.eval_split, limit=5)]  # deterministic
    ex = rows[0]
    answer = task.extract_answer(f"Let me think... the result is {ex.reference}")
    assert answer == ex.reference and task.is_correct(answer, ex)
    assert not task.is_correct(answer + 1, ex)
    assert task.equivalent(answer, answer, ex) and not task.equivalent(answer, answer + 1, ex)
    assert task.extract_answer("no digits here") is None
    assert not task.equivalent(None, None, ex)
    assert task.equivalent_many([(1, 1, ex), (1, 2, ex)]) == [True, False]


def test_unknown_task_names_the_known_ones(isolated_registry: None) -> None:
    with pytest.raises(manager.UnknownTaskError, match=r"unknown task 'no-such-task'.*toy-arith"):
        manager.get_task("no-such-task")


def test_get_tasks_returns_a_copy(isolated_registry: None) -> None:
    tasks = manager.get_tasks()
    tasks.pop("toy-arith")
    assert "toy-arith" in manager.get_tasks()


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        (ToyArithmeticTask, "not an instance"),
        (object(), "expects an autojudge.core.task.Task instance"),
        ("toy-arith", "expects an autojudge.core.task.Task instance"),
    ],
)
def test_validate_task_rejects_non_instances(obj: object, message: str) -> None:
    with pytest.raises(TaskValidationError, match=message):
        validate_task(obj)


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ({"name": "Upper"}, "invalid name"),
        ({"name": "has space"}, "invalid name"),
        ({"name": ""}, "invalid name"),
        ({"name": "x" * 65}, "invalid name"),
        ({"description": ""}, "no description"),
        ({"stop_sequences": "###"}, "stop_sequences"),
        ({"stop_sequences": ("",)}, "stop_sequences"),
    ],
)
def test_validate_task_rejects_malformed_instances(attrs: dict[str, object], message: str) -> None:
    cls = type("Broken", (ToyArithmeticTask,), attrs)
    with pytest.raises(TaskValidationError, match=message):
        validate_task(cls())


def test_validate_task_accepts_the_toy_task() -> None:
    task = ToyArithmeticTask()
    assert validate_task(task) is task
    assert isinstance(task, Task)


# -- third-party plugins, broken and not ---------------------------------------------------------


def test_broken_plugins_warn_by_name_and_do_not_take_down_the_others(fake_plugins: Path) -> None:
    reg, messages = load_recording()

    # the good plugin and the built-in task survive every broken neighbour
    assert "good" in reg.plugins and reg.plugins["good"].source == "ajspec-good"
    assert reg.plugins["good"].version == "0.1"
    assert reg.plugins["good"].tasks == ["good-task"]
    assert reg.task_owner["good-task"] == "good"
    assert reg.task_owner["toy-arith"] == "builtin:toy"
    good = manager.get_task("good-task")
    assert good.is_correct(good.extract_answer(" 3 "), good.load("test")[0])

    for name in BROKEN:
        assert warnings_about(messages, name), f"no PluginWarning names plugin {name!r}: {messages}"
    assert not warnings_about(messages, "good"), messages
    assert reg.problems == messages  # `aj plugins` reports exactly what was warned

    def only(name: str) -> str:
        found = warnings_about(messages, name)
        assert len(found) >= 1
        return " | ".join(found)

    assert "failed to import" in only("importboom") and "boom at import time" in only("importboom")
    assert "ajspec-importboom" in only("importboom") and manager.LOAD_PLUGINS_ENV in only("importboom")
    assert "failed to import" in only("sysexit") and "SystemExit" in only("sysexit")
    assert "failed to import" in only("missingattr") and "no_such_object" in only("missingattr")
    assert "exploded inside register_tasks" in only("hookraises")
    assert "malformed" in only("badsig")
    assert "unknown hook" in only("typo") and "register_task" in only("typo")
    assert "register_tasks" in only("typo")  # the message lists the real hooks
    assert "no autojudge hook" in only("nohooks") and "hookimpl" in only("nohooks")
    assert "already registered by 'builtin:toy'" in only("duplicate")

    malformed = warnings_about(messages, "malformed")
    expected_fragments = ["got dict", "got the class Fine", "'Bad Name!'", "'no-description'", "'bad-stops'"]
    for fragment in expected_fragments:
        assert any(fragment in m for m in malformed), (fragment, malformed)
    assert len(malformed) == len(expected_fragments)
    # the plugin's one valid task is still registered
    assert reg.task_owner["malformed-but-this-one-is-fine"] == "malformed"
    for bad in ("Bad Name!", "no-description", "bad-stops", "a-dict"):
        assert bad not in reg.tasks

    # broken plugins never make it into the registry as loaded plugins
    for name in ("importboom", "sysexit", "missingattr", "badsig"):
        assert name not in reg.plugins


def test_plugin_commands_are_recorded_once_and_failures_warn(fake_plugins: Path) -> None:
    reg, _ = load_recording()
    group = click.Group()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        manager.register_commands(group)
        manager.register_commands(click.Group())  # `aj plugins` counts commands a second time
    assert "good-hello" in group.commands
    assert reg.plugins["good"].commands == ["good-hello"]
    texts = [str(w.message) for w in caught if issubclass(w.category, manager.PluginWarning)]
    assert any("'hookraises'" in t and "register_commands" in t for t in texts), texts


CLOBBER = """
import click
from autojudge.plugins import hookimpl


@hookimpl
def register_commands(cli):
    @cli.command(name="tasks")
    def tasks():
        click.echo("hijacked")
"""


def test_a_plugin_cannot_replace_an_existing_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_registry: None
) -> None:
    root = tmp_path / "site"
    make_distribution(root, "ajspec-clobber", {"clobber": "ajt_clobber"}, {"ajt_clobber": CLOBBER})
    make_distribution(root, "ajspec-good", {"good": "ajt_good"}, {"ajt_good": GOOD})
    monkeypatch.syspath_prepend(str(root))
    load_recording()
    group = click.Group()
    original = click.Command("tasks", callback=lambda: None)
    group.add_command(original)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        manager.register_commands(group)
        manager.register_commands(group)  # a second build (e.g. main() called twice) is no conflict
    texts = [str(w.message) for w in caught if issubclass(w.category, manager.PluginWarning)]
    assert group.commands["tasks"] is original
    assert "good-hello" in group.commands
    assert [t for t in texts if "replaced" in t] == [
        "plugin 'clobber' replaced the command 'tasks'; keeping the original"
    ], texts


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        (None, {"good", "malformed", "hookraises", "duplicate", "typo", "nohooks"}),
        ("", set()),
        ("good", {"good"}),
        (" good , malformed ", {"good", "malformed"}),
        ("ajspec-good", {"good"}),  # a distribution name
        ("Ajspec_Good", {"good"}),  # distribution names compare in normalised form
        ("not-installed", set()),
    ],
)
def test_aj_load_plugins_restricts_external_plugins(
    fake_plugins: Path, monkeypatch: pytest.MonkeyPatch, setting: str | None, expected: set[str]
) -> None:
    if setting is not None:
        monkeypatch.setenv(manager.LOAD_PLUGINS_ENV, setting)
    reg, messages = load_recording()
    external = {name for name, info in reg.plugins.items() if info.source != "builtin"}
    fake_loaded = external & set(FAKE_PLUGINS)
    assert fake_loaded == expected
    assert "toy-arith" in reg.tasks  # built-ins always load
    if setting is not None:
        # plugins that were filtered out are not even imported, so they cannot warn
        for name in set(FAKE_PLUGINS) - expected:
            assert not warnings_about(messages, name), messages
    if setting == "":
        assert external == set(), "AJ_LOAD_PLUGINS='' must load no external plugin at all"


def test_two_entry_points_with_one_name_warn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_registry: None
) -> None:
    root = tmp_path / "site"
    make_distribution(root, "ajspec-first", {"samename": "ajt_first"}, {"ajt_first": GOOD})
    make_distribution(root, "ajspec-second", {"samename": "ajt_second"}, {"ajt_second": GOOD})
    monkeypatch.syspath_prepend(str(root))
    reg, messages = load_recording()
    assert "samename" in reg.plugins
    assert any("'samename'" in m and "already loaded" in m for m in messages), messages


def test_plugins_info_is_json(fake_plugins: Path) -> None:
    load_recording()
    info = json.loads(json.dumps(manager.plugins_info()))
    by_name = {p["name"]: p for p in info}
    assert by_name["builtin:toy"]["tasks"] == ["toy-arith"]
    assert by_name["builtin:toy"]["source"] == "builtin"
    assert by_name["good"] == {
        "name": "good",
        "source": "ajspec-good",
        "version": "0.1",
        "hooks": ["register_commands", "register_tasks"],
        "tasks": ["good-task"],
        "commands": [],  # none counted until commands are registered
        "judges": [],
        "drafters": [],
        "comparers": [],
    }


# -- the same through the `aj` command ---------------------------------------------------------


def aj_command() -> list[str]:
    script = Path(sys.executable).with_name("aj")
    assert script.is_file(), (
        f"the `aj` console script is missing next to {sys.executable}: install the package"
    )
    return [str(script)]


def run_aj(args: list[str], pythonpath: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != manager.LOAD_PLUGINS_ENV}
    full_env.update(env)
    full_env["PYTHONPATH"] = os.pathsep.join([str(pythonpath), full_env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    return subprocess.run(
        aj_command() + args,
        capture_output=True,
        text=True,
        env=full_env,
        timeout=120,
        cwd=pythonpath,
        check=False,
    )


@pytest.fixture(scope="module")
def fake_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fake-site")
    write_fake_plugins(root)
    return root


def test_aj_plugins_prints_json_and_warns_on_stderr(fake_site: Path) -> None:
    proc = run_aj(["plugins"], fake_site)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)  # stdout is pure JSON: warnings go to stderr
    by_name = {p["name"]: p for p in out["plugins"]}
    assert by_name["good"]["tasks"] == ["good-task"]
    assert by_name["good"]["commands"] == ["good-hello"]
    assert by_name["builtin:toy"]["tasks"] == ["toy-arith"]
    for name in BROKEN:
        assert any(f"'{name}'" in p for p in out["problems"]), (name, out["problems"])
        assert f"aj: plugin warning: plugin '{name}'" in proc.stderr, (name, proc.stderr)
    assert "Traceback" not in proc.stderr


def test_aj_tasks_and_plugin_command_survive_broken_plugins(fake_site: Path) -> None:
    proc = run_aj(["tasks"], fake_site)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(
        line.startswith("good-task ") and "A well-formed task" in line and "[good]" in line for line in lines
    )
    assert any(line.startswith("toy-arith ") for line in lines)
    assert "failed to import" in proc.stderr

    hello = run_aj(["good-hello"], fake_site)
    assert hello.returncode == 0, hello.stderr
    assert hello.stdout.strip() == "hello from good plugin"


def test_aj_load_plugins_through_the_command(fake_site: Path) -> None:
    proc = run_aj(["plugins"], fake_site, AJ_LOAD_PLUGINS="good")
    assert proc.returncode == 0, proc.stderr
    names = {p["name"] for p in json.loads(proc.stdout)["plugins"]}
    assert "good" in names and not names & set(BROKEN)
    for name in BROKEN:
        assert f"'{name}'" not in proc.stderr

    proc = run_aj(["tasks", "--json"], fake_site, AJ_LOAD_PLUGINS="")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert {r["plugin"] for r in rows} <= {
        n for n in manager.load_plugins().plugins if n.startswith("builtin:")
    }


# -- the example third-party plugin (tests/plugins/ajspec-example) --------------------------


def test_example_plugin_through_the_library_api(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_registry: None
) -> None:
    """The example package, discovered through an entry point, used only through autojudge's API."""
    root = tmp_path / "site"
    make_distribution(root, "ajspec-example", {"example": "ajspec_example"}, {})
    monkeypatch.syspath_prepend(str(EXAMPLE_PLUGIN))
    monkeypatch.syspath_prepend(str(root))
    reg, messages = load_recording()
    assert not warnings_about(messages, "example"), messages
    assert reg.task_owner["example-wordcount"] == "example"

    task = manager.get_task("example-wordcount")
    train, test = task.load(task.mining_split), task.load(task.eval_split)
    assert len(train) >= 5 and len(test) >= 3
    assert len({ex.id for ex in train + test}) == len(train) + len(test)
    assert task.load("train", limit=2) == train[:2]
    ex = test[0]
    assert ex.question == "Hello world." and ex.reference == 2
    assert task.build_messages(ex)[0]["content"].endswith("Hello world.")
    assert task.extract_answer("That sentence has 2 words.") == 2
    assert task.extract_answer("I count 3.") == 3
    assert task.extract_answer("no idea") is None
    assert task.is_correct(task.extract_answer("It has 2 words."), ex)
    assert not task.is_correct(task.extract_answer("It has 3 words."), ex)
    assert not task.is_correct(None, ex)
    assert task.equivalent(2, 2, ex) and not task.equivalent(2, 3, ex) and not task.equivalent(None, None, ex)
    info = task.info()
    assert info["name"] == "example-wordcount" and "\n" not in info["description"]


def test_example_plugin_is_installed_in_this_environment(isolated_registry: None) -> None:
    """`.ci/install` installs the example plugin into .venv, so `aj tasks` there lists its task."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        dist = distribution("ajspec-example")
    except PackageNotFoundError:
        pytest.fail(
            "ajspec-example is not installed here: run `bash .ci/install` (it installs it into .venv)"
        )
    eps = [ep for ep in dist.entry_points if ep.group == "autojudge"]
    assert [(ep.name, ep.value) for ep in eps] == [("example", "ajspec_example")]
    proc = subprocess.run(
        aj_command() + ["tasks"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={k: v for k, v in os.environ.items() if k != manager.LOAD_PLUGINS_ENV},
    )
    assert proc.returncode == 0, proc.stderr
    assert any(
        line.startswith("example-wordcount ") and line.rstrip().endswith("[example]")
        for line in proc.stdout.splitlines()
    ), proc.stdout


# -- judge kinds, drafters and comparers from a third-party plugin ------------------------------

JUDGE_PLUGIN = '''
import torch

from autojudge.core.drafters import Drafter, Proposal
from autojudge.core.judge import Judge, TopKJudge
from autojudge.plugins import hookimpl


class MarginJudge(Judge):
    """Accept a mismatching draft token when the target's top-1 margin is below ``m``."""

    name = "margin"
    kind = "mykind"
    spec_form = "mykind:M"

    def __init__(self, m: float):
        if not 0.0 <= m <= 1.0:
            raise ValueError(f"m must be in [0, 1], got {m}")
        self.m = float(m)

    @classmethod
    def from_spec(cls, arg):
        return cls(float(arg))

    def params(self):
        return {"m": self.m}

    def p_important(self, feats):
        return (feats.extras[:, 2] >= self.m).float()


class EchoDrafter(Drafter):
    """Proposes the last token again, k times."""

    name = "echo"

    def __init__(self, device="cpu"):
        self.device = device

    def propose(self, seq, k):
        return Proposal(torch.tensor([seq[-1]] * k, dtype=torch.long), self.name)


class Impostor(TopKJudge):
    pass


class NoKind(TopKJudge):
    kind = "My Kind"


class BadForm(TopKJudge):
    kind = "badform"
    spec_form = "other:K"


class Abstract(Judge):
    kind = "abstract"


class Comparer:
    name = "exact"

    def __call__(self, a, b):
        return a == b


@hookimpl
def register_judges(register):
    register(MarginJudge)
    register(Impostor)       # kind 'topk' is taken by the built-in
    register(MarginJudge(0.5))  # an instance, not the class
    register(EchoDrafter)    # not a Judge
    register(NoKind)
    register(BadForm)
    register(Abstract)


@hookimpl
def register_drafters(register):
    register(EchoDrafter)
    register(MarginJudge)  # not a Drafter


@hookimpl
def register_comparers(register):
    register(Comparer)
    register(object())  # no name
'''


@pytest.fixture
def judge_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_registry: None) -> Path:
    root = tmp_path / "site"
    make_distribution(root, "ajspec-mykind", {"mykind": "ajt_mykind"}, {"ajt_mykind": JUDGE_PLUGIN})
    monkeypatch.syspath_prepend(str(root))
    return root


def test_builtin_judge_kinds_drafters_and_comparers_are_registered(isolated_registry: None) -> None:
    from autojudge.core.drafters import LookupDrafter
    from autojudge.core.judge import LinearJudge, NeverAccept, TopKJudge

    reg = manager.load_plugins()
    assert manager.get_judge_kind("topk") is TopKJudge and manager.get_judge_kind("linear") is LinearJudge
    assert reg.judge_owner["never"] == "builtin:judges"
    assert manager.judge_spec_forms()[:4] == ("never", "always", "topk:K", "prob:P")
    assert isinstance(manager.judge_from_spec(" NEVER "), NeverAccept)
    assert manager.judge_from_spec("topk:3").k == 3
    for not_a_kind in ("never:3", "topk", "linear", "judge.safetensors", "runs/a:b.safetensors"):
        assert manager.judge_from_spec(not_a_kind) is None, not_a_kind
    with pytest.raises(ValueError, match=r"bad judge spec 'topk:x'"):
        manager.judge_from_spec("topk:x")
    with pytest.raises(manager.UnknownNameError, match=r"unknown judge kind 'nope'.*topk"):
        manager.get_judge_kind("nope")
    assert {"draft-model", "lookup", "none"} <= set(manager.get_drafters())
    lookup = manager.get_drafter("lookup", [1, 2, 3, 4], max_ngram=2)
    assert isinstance(lookup, LookupDrafter) and lookup.propose([1, 2], 2).tokens.tolist() == [3, 4]
    with pytest.raises(manager.UnknownNameError, match="unknown drafter 'nope'"):
        manager.get_drafter("nope")
    info = {p["name"]: p for p in manager.plugins_info()}
    assert info["builtin:judges"]["judges"] == ["never", "always", "topk", "prob", "linear"]
    assert info["builtin:drafters"]["drafters"] == ["draft-model", "lookup", "none"]
    assert (
        info["builtin:toy"]["judges"]
        == info["builtin:toy"]["drafters"]
        == info["builtin:toy"]["comparers"]
        == []
    )


def test_a_plugin_adds_a_judge_kind_and_a_drafter(judge_plugin: Path) -> None:
    import json

    import torch

    from autojudge.core.judge import MismatchFeatures
    from autojudge.judges.spec import load_judge_spec

    reg, messages = load_recording()
    assert reg.judge_owner["mykind"] == "mykind" and reg.drafter_owner["echo"] == "mykind"
    assert reg.comparer_owner["exact"] == "mykind" and manager.get_comparer("exact")()(1, 1)
    assert reg.plugins["mykind"].judges == ["mykind"] and reg.plugins["mykind"].drafters == ["echo"]
    assert "mykind:M" in manager.judge_spec_forms()

    # --judge mykind:ARG, through the one resolver of --judge strings
    judge = load_judge_spec("mykind:0.25")
    assert type(judge).__name__ == "MarginJudge" and judge.m == 0.25
    with pytest.raises(ValueError, match=r"bad judge spec 'mykind:2'.*m must be in"):
        load_judge_spec("mykind:2")
    with pytest.raises(
        FileNotFoundError, match=r"neither a baseline \(never, always, topk:K, prob:P, mykind:M\)"
    ):
        load_judge_spec("mykind")
    # its description rebuilds it through the registry (what a vLLM worker does)
    description = json.loads(json.dumps(judge.describe()))
    assert description == {"kind": "mykind", "name": "margin", "m": 0.25, "threshold": 0.5}
    rebuilt = manager.judge_from_description(description)
    logits = torch.randn(5, 11)
    feats = MismatchFeatures(torch.arange(5), logits.argmax(-1), logits, torch.zeros(5, 2))
    assert torch.equal(rebuilt.accept(feats), judge.accept(feats))

    echo = manager.get_drafter("echo")
    assert echo.propose([4, 7], 3).tokens.tolist() == [7, 7, 7]

    mine = warnings_about(messages, "mykind")
    expected = [
        "registered judge kind 'topk', already registered by 'builtin:judges'; keeping the first",
        "register_judges expects a subclass of autojudge.core.judge.Judge (the class itself), an instance of MarginJudge",
        "EchoDrafter is not a subclass of autojudge.core.judge.Judge",
        "judge NoKind has an invalid kind 'My Kind'",
        "judge BadForm (kind 'badform') has spec_form 'other:K'",
        "Abstract is abstract (implement p_important)",
        "MarginJudge is not a subclass of autojudge.core.drafters.Drafter",
        "comparer object has an invalid name None",
    ]
    for fragment in expected:
        assert any(fragment in m for m in mine), (fragment, mine)
    assert len(mine) == len(expected), mine
    for bad in ("My Kind", "badform", "abstract"):
        assert bad not in reg.judges
    assert manager.get_judge_kind("topk").__name__ == "TopKJudge"  # the built-in kept its kind


def test_aj_plugins_lists_judge_kinds_and_drafters(judge_plugin: Path) -> None:
    proc = run_aj(["plugins"], judge_plugin, AJ_LOAD_PLUGINS="mykind")
    assert proc.returncode == 0, proc.stderr
    by_name = {p["name"]: p for p in json.loads(proc.stdout)["plugins"]}
    mine = by_name["mykind"]
    assert mine["judges"] == ["mykind"] and mine["drafters"] == ["echo"] and mine["comparers"] == ["exact"]
    assert mine["hooks"] == ["register_comparers", "register_drafters", "register_judges"]
    assert by_name["builtin:judges"]["judges"] == ["never", "always", "topk", "prob", "linear"]
