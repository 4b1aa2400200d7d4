"""``bevgen sim``: train and evaluate driving agents (PPO) on any scenario set, in MetaDrive or the batched
tensor simulator (sim_bridge.rl, sim_bridge.batched).

    bevgen sim train | eval | experiment | rollout
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from bevgen.cli_common import SCENARIOS, ConfigOpt, SetOpt, save_invocation
from bevgen.cli_common import console as _console
from bevgen.cli_common import fail as _fail

app = typer.Typer(help="Train and evaluate driving agents (PPO) in MetaDrive or the batched simulator.",
                  no_args_is_help=True)


# ---- sim ----------------------------------------------------------------------------------------
@app.command("train")
def sim_train(
    train_data: List[str] = typer.Option(..., "--train", metavar=SCENARIOS,
                                         help="Dataset directory to train on, or 'procedural'. Repeat to train on "
                                              "several directories in one run (procedural, real and augmented "
                                              "scenario folders): they are indexed together in OUT/train_data."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory (config, TensorBoard logs, checkpoints)."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Environment steps (config: total_steps)."),
    envs: Optional[int] = typer.Option(None, "--envs", min=1, help="Worker processes, one MetaDrive engine each."),
    backend: Optional[str] = typer.Option(None, "--backend", help="'metadrive' or 'batched' (the tensor simulator: "
                                          "replays the --train data, observation 'scene'). Default: the config's."),
    slots: Optional[int] = typer.Option(None, "--slots", min=1, help="Batched backend: scene slots stepping together "
                                        "(config: batched.num_scenes)."),
    self_play: Optional[bool] = typer.Option(None, "--self-play/--no-self-play", help="Batched backend: the policy "
                                             "drives every moving vehicle of each scene (up to "
                                             "batched.self_play_agents), each an agent of its own (config: "
                                             "batched.self_play)."),
    scenarios_n: Optional[int] = typer.Option(None, "--scenarios", min=0,
                                              help="Number of scenarios (0 = whole directory)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Training seed (config: seed)."),
    config: Optional[Path] = ConfigOpt,
    set_: Optional[List[str]] = SetOpt,
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its latest checkpoint."),
):
    """Train PPO (stable-baselines3) in MetaDrive or the batched simulator; TensorBoard in OUT/tb, checkpoints in
    OUT/checkpoints."""
    from runkit.config import ConfigError, load_config
    from runkit.rundir import run_config_file
    from sim_bridge.rl.train import PPOTrainConfig, train

    if backend not in (None, "metadrive", "batched"):
        _fail(f"--backend must be 'metadrive' or 'batched', got {backend!r}")
    data = train_data[0]
    if len(train_data) > 1:
        from sim_bridge.dataset import merge_datasets
        from sim_bridge.scenario import ScenarioError

        if "procedural" in train_data:
            _fail("'procedural' maps have no scenario files to index with other --train folders: export them first "
                  "(`bevgen scenarios procedural --out DIR`) and pass that DIR")
        try:
            data = str(merge_datasets(train_data, out / "train_data"))
        except ScenarioError as e:
            _fail(str(e))
    overrides = [f"env.data={data}"]
    if backend is not None:  # the batched simulator observes 'scene'; MetaDrive keeps the config's observation
        overrides += [f"backend={backend}"] + (["env.observation=scene"] if backend == "batched" else [])
    overrides += list(set_ or [])
    for key, val in (("total_steps", steps), ("num_envs", envs), ("env.num_scenarios", scenarios_n), ("seed", seed),
                     ("batched.num_scenes", slots), ("batched.self_play", self_play)):
        if val is not None:
            overrides.append(f"{key}={val}")
    config = run_config_file(out, resume, config)  # continue with the run's own settings; options still apply
    try:
        cfg = load_config(PPOTrainConfig, config, overrides)
        result = train(cfg, out, resume=resume)
    except (ConfigError, FileNotFoundError, FileExistsError, ValueError) as e:
        _fail(str(e))
    eps = result.episodes[-20:]
    mean = sum(e["reward"] for e in eps) / max(len(eps), 1)
    _console().print(f"trained steps {result.start_step} -> {result.final_step} "
                     f"({result.steps_per_second:.0f} steps/s); "
                     f"mean reward of the last {len(eps)} episodes {mean:.2f}; run in {out}")


@app.command("eval")
def sim_eval(
    policy: str = typer.Option(..., "--policy", help="A training run directory, 'random' or 'idm'."),
    data: str = typer.Option(..., "--data", metavar=SCENARIOS,
                             help="Dataset directory to evaluate on (or 'procedural')."),
    out: Path = typer.Option(..., "--out", "-o", help="Where metrics.json and metrics.md go."),
    episodes: int = typer.Option(0, "--episodes", min=0, help="Episodes in total (0 = one per scenario)."),
    workers: int = typer.Option(1, "--workers", "-j", min=1, help="Parallel shards, one MetaDrive engine each."),
    backend: str = typer.Option("metadrive", help="Simulator: 'metadrive' or 'batched' (the tensor simulator; "
                                "policies trained with --backend batched, or 'random'). 'process' / 'ray' are "
                                "accepted for --pool (older spelling)."),
    pool: str = typer.Option("process", help="MetaDrive shards: 'process' (local pool) or 'ray' (local or "
                             "RAY_ADDRESS cluster)."),
    reference: bool = typer.Option(True, help="Also evaluate the random and IDM policies (reference rows)."),
    self_play: bool = typer.Option(False, "--self-play", help="Batched backend: the policy drives every moving "
                                   "vehicle of each scene at once; one row per driven vehicle."),
    config: Optional[Path] = ConfigOpt,
    set_: Optional[List[str]] = SetOpt,
):
    """Evaluate a policy: success rate, route completion, crash and out-of-road rates, reward; per scenario."""
    from runkit.config import ConfigError, from_dict, load_config
    from sim_bridge.envs.factory import EnvConfig
    from sim_bridge.rl.evaluate import EvalConfig, evaluate, write_metrics

    if backend in ("process", "ray"):
        backend, pool = "metadrive", backend
    try:
        env_cfg = load_config(EnvConfig, config, [f"data={data}"] + list(set_ or []))
        cfg = from_dict(EvalConfig, {"episodes": episodes, "workers": workers, "backend": pool,
                                     "simulator": backend, "reference": reference, "self_play": self_play},
                        "options")
        with _console().status(f"evaluating {policy} on {data}" + (" with the random and IDM references"
                                                                   if reference else "")):
            result = evaluate(policy, data, cfg, env_cfg)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        _fail(str(e))
    path = write_metrics(result, out)
    typer.echo((out / "metrics.md").read_text())
    _console().print(f"metrics in {path}")


@app.command("experiment")
def sim_experiment(
    real: Path = typer.Option(..., "--real", metavar=SCENARIOS,
                              help="Real scenario directory; part of it is held out for testing."),
    out: Path = typer.Option(..., "--out", "-o", help="Experiment directory (runs, results.json, experiment.png)."),
    budget: int = typer.Option(20_000, "--budget", min=1, help="PPO environment steps per arm."),
    held_out: int = typer.Option(3, "--held-out", min=1, help="Real scenarios held out for testing."),
    augmented: Optional[Path] = typer.Option(None, "--augmented", metavar=SCENARIOS,
                                             help="Traffic-augmented dataset (third arm)."),
    envs: int = typer.Option(2, "--envs", min=1, help="Worker processes per training run."),
    seeds: Optional[int] = typer.Option(None, "--seeds", min=1, help="Training runs per arm, for the 95% intervals "
                                        "(config: seeds, default 3)."),
    backend: Optional[str] = typer.Option(None, "--backend", help="Training simulator: 'metadrive' or 'batched' "
                                          "(observation 'scene'); evaluation is MetaDrive's either way."),
    config: Optional[Path] = ConfigOpt,
    set_: Optional[List[str]] = SetOpt,
):
    """Same RL budget on procedural / real / augmented (and augmented + procedural) scenarios, several seeds per
    arm, tested on held-out real scenes in MetaDrive; results.json with 95% intervals and experiment.png."""
    from runkit.config import ConfigError, load_config
    from sim_bridge.rl.evaluate import EvalConfig
    from sim_bridge.rl.experiment import ExperimentConfig, run_experiment

    overrides = [f"real_data={real}", f"budget_steps={budget}", f"held_out={held_out}", f"num_envs={envs}"]
    overrides += ([f"augmented={augmented}"] if augmented else []) + ([f"seeds={seeds}"] if seeds else [])
    if backend not in (None, "metadrive", "batched"):
        _fail(f"--backend must be 'metadrive' or 'batched', got {backend!r}")
    if backend is not None:
        overrides += [f"train.backend={backend}"] + (["train.env.observation=scene"] if backend == "batched" else [])
    overrides += list(set_ or [])
    try:
        cfg = load_config(ExperimentConfig, config, overrides)
        res = run_experiment(cfg, out, EvalConfig(workers=envs))
    except (ConfigError, ValueError) as e:
        _fail(str(e))
    def cell(s: dict) -> str:
        return f"{s['mean']:.2f} [{s['low']:.2f}, {s['high']:.2f}]"

    typer.echo(f"held-out real scenes, mean [95% interval] over {len(res['seeds'])} seed(s) per arm:")
    for arm, r in res["arms"].items():
        m = r["summary"]
        typer.echo(f"{arm:>20}: success {cell(m['success_rate'])}  route completion {cell(m['route_completion'])}  "
                   f"crash {cell(m['crash_rate'])}")
    for ref, m in res["reference"].items():
        typer.echo(f"{ref:>20}: success {m['success_rate']:.2f}  route completion {m['route_completion']:.2f}  "
                   f"crash {m['crash_rate']:.2f}")
    _console().print(f"results in {out / 'results.json'}, plot {out / 'experiment.png'}")


@app.command("rollout")
def sim_rollout(
    ctx: typer.Context,
    policy: str = typer.Option(..., "--policy", help="A training run directory, 'random' or 'idm'."),
    data: str = typer.Option(..., "--data", metavar=SCENARIOS, help="Dataset directory (or 'procedural')."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for the animation."),
    scenario: int = typer.Option(0, "--scenario", min=0, help="Scenario index in the directory (or seed offset)."),
    steps: int = typer.Option(300, "--steps", min=1, help="At most this many steps."),
    fmt: str = typer.Option("gif", "--format", help="gif or mp4."),
):
    """Drive one episode and write an animated top-down view: the agent, the traffic and its route."""
    from bevgen.rollout import record_rollout, save_animation
    from sim_bridge.envs.factory import EnvConfig, make_env
    from sim_bridge.rl.evaluate import make_policy, policy_env

    try:
        # a run's policy reads the observation it was trained on ("scene" for batched runs, with its layout)
        env_cfg = EnvConfig(data=data, start_index=scenario, num_scenarios=1)
        env_cfg = policy_env(policy, env_cfg) if Path(policy).is_dir() else env_cfg
        env_cfg.check_scenarios()
    except ValueError as e:
        _fail(str(e))
    if fmt not in ("gif", "mp4"):
        _fail(f"--format must be gif or mp4, got {fmt!r}")
    env = make_env(env_cfg, ego="idm" if policy == "idm" else "agent")
    try:
        try:
            act = make_policy(policy, env, seed=0)
        except (FileNotFoundError, ValueError) as e:
            _fail(str(e))
        with _console().status(f"driving up to {steps} steps"):
            result = record_rollout(env, act, max_steps=steps, seed=scenario)
    finally:
        env.close()
    out.mkdir(parents=True, exist_ok=True)
    save_invocation(ctx, out)
    path = save_animation(result.frames, out / f"rollout.{fmt}", fps=10)
    last = result.infos[-1] if result.infos else {}
    summary = {"steps": result.steps, "total_reward": round(float(result.total_reward), 3),
               "route_completion": float(last.get("route_completion", 0.0)), "crash": bool(last.get("crash")),
               "out_of_road": bool(last.get("out_of_road")), "arrive_dest": bool(last.get("arrive_dest"))}
    (out / "rollout.json").write_text(json.dumps(summary, indent=2))
    _console().print(f"{len(result.frames)} frames -> {path}; {summary}")
