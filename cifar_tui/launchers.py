"""Launchers beyond a local process, through submitit: SLURM jobs, or submitit's local executor.

`--launcher local` (default)   cifar_tui.supervisor.spawn_engine: a process of its own on this host.
`--launcher local-submitit`    SubmititSpawner: each run a job of submitit's LocalExecutor, on GPUs
                               leased like a local run. The same job code as on SLURM (engine.record.job.
                               run_engine, pickled by submitit), so that it is tested without a cluster.
`--launcher slurm`             SlurmLauncher: the supervisor hands it its whole queue
                               (`Supervisor.submit_queued`); several runs go as one job array
                               (sbatch --array); a DDP run is a multi-task job, one task per node
                               running torchrun with the c10d rendezvous on the first node.

Every job writes into the same workspace (a shared file system): the engine's events, checkpoints
and store rows, its stdout in runs/<id>/stdout.log; submitit's own files (pickles, job scripts,
logs) in runs/.jobs/. The store's `jobs` table maps a run to its job: `cifar-tui runs` lists a
submitted run as queued until its engine starts, then follows it by its store row and heartbeat
(a job on another host has no local pid); `cifar-tui stop` writes a stop request into its run dir
and cancels the job (scancel through submitit).
"""
from __future__ import annotations

import contextlib
import fcntl
import io
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from engine.config import ConfigError, ExperimentConfig, load_config
from engine.record.job import TASK_STARTED_VAR

from .launch import Launched, LaunchRequest, discard_unstarted, engine_command, item_labels, run_arguments
from .workspace import Workspace

LAUNCHERS = ("local", "local-submitit", "slurm")
JOBS_DIR = ".jobs"                    # in the runs home: not a plain run id, never listed as a run
LOCAL_TIMEOUT_MIN = 7 * 24 * 60       # the local executor kills a job after its timeout: a week


def jobs_folder(ws: Workspace, launcher: str = "slurm") -> Path:
    """submitit's folder: one per SLURM job (%j); the local executor's jobs share one (their
    controller would create a literal `%j`)."""
    return Path(ws.home).resolve() / JOBS_DIR / ("%j" if launcher == "slurm" else "local")


def _absolute(ws: Workspace) -> Workspace:
    """Jobs may start in another directory (another host): every path absolute."""
    return Workspace(home=Path(ws.home).resolve(), data_root=Path(ws.data_root).resolve(),
                     configs=Path(ws.configs).resolve() if ws.configs else None)


def _project_env() -> dict[str, str]:
    """The job imports `engine` from this checkout (PYTHONPATH), like a local launch."""
    root = str(Path(__file__).resolve().parent.parent)
    parts = [root] + [p for p in (os.environ.get("PYTHONPATH") or "").split(os.pathsep) if p and p != root]
    return {"PYTHONPATH": os.pathsep.join(parts)}


@dataclass
class JobSpec:
    """One run as a job: the engine command and where its output goes."""

    run_id: str
    cmd: list[str]
    env: dict[str, str]
    log_file: str
    distributed: bool


def job_spec(ws: Workspace, item: dict, run_id: str, cfg: ExperimentConfig | None, *, nproc: int, nnodes: int = 1,
             env: dict[str, str] | None = None) -> JobSpec:
    """The engine command of a queue item run as a job (new run or resume)."""
    ws = _absolute(ws)
    if nnodes > 1:  # one torchrun per node, meeting on the job's first node
        torchrun = [f"--nnodes={nnodes}", "--rdzv-backend=c10d", "--rdzv-endpoint={master}:{port}",
                    f"--rdzv-id={run_id}"]
    else:
        torchrun = None
    if item.get("resume_of"):
        args = ["--resume", run_id]
    else:
        request = LaunchRequest(item["config"], list(item["overrides"]))
        args = run_arguments(ws, request, run_id, **item_labels(item, cfg or request.load(ws)))
    cmd = engine_command(ws, *args, nproc=nproc, torchrun_args=torchrun)
    return JobSpec(run_id, cmd, {**_project_env(), **(env or {})}, str(ws.home / run_id / "stdout.log"),
                   distributed=nproc > 1 or nnodes > 1)


class JobProcess:
    """A submitit job seen as a process (poll, wait, send_signal, pid), for the supervisor and
    the followers. Its exit code is the engine's (engine.record.job.run_engine returns it); a job that
    failed before that counts as 1."""

    def __init__(self, job, controller: subprocess.Popen | None = None):
        self.job = job
        self.controller = controller  # the local executor's controller process
        self.pid = controller.pid if controller is not None else None
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is not None:
            return self.returncode
        if self.controller is not None and self.controller.poll() is None:
            return None
        if self.controller is None and not self.job.done():
            return None
        try:
            code = self.job.result()
        except Exception:  # noqa: BLE001 - the job itself failed (submitit's log says why)
            code = 1
        self.returncode = int(code) if isinstance(code, int) else 1
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(str(self.job.job_id), timeout or 0)
            time.sleep(0.1)
        return self.returncode  # type: ignore[return-value]

    def send_signal(self, sig: int) -> None:
        if self.controller is not None:
            # the controller passes SIGTERM on to the job's task (a graceful stop); on SIGINT it
            # would SIGKILL the task a second later
            if self.controller.poll() is None:
                self.controller.send_signal(signal.SIGTERM if sig in (signal.SIGINT, signal.SIGTERM) else sig)
        else:
            self.job.cancel(check=False)


def _local_executor(folder: Path, env: dict[str, str]):
    """submitit's LocalExecutor, its job controller started in a session of its own: a Ctrl-C in
    the launcher's terminal reaches the launcher only (which stops its runs gracefully), not the
    controller (which would SIGKILL the run a second later). The rest is submitit's own code."""
    from submitit.local.local import LocalExecutor, LocalJob

    class DetachedLocalExecutor(LocalExecutor):
        def _submit_command(self, command: str) -> LocalJob:
            # as submitit.local.local.start_controller, with start_new_session and our environment
            ntasks = self.parameters.get("tasks_per_node", 1)
            child_env = {**os.environ, **env,
                         "SUBMITIT_LOCAL_NTASKS": str(ntasks), "SUBMITIT_LOCAL_COMMAND": command,
                         "SUBMITIT_LOCAL_TIMEOUT_S": str(int(60 * self.parameters.get("timeout_min", 2.0))),
                         "SUBMITIT_LOCAL_SIGNAL_DELAY_S": str(int(self.parameters.get("signal_delay_s", 30))),
                         "SUBMITIT_LOCAL_NODEID": "0", "SUBMITIT_LOCAL_JOB_NUM_NODES": "1",
                         "SUBMITIT_STDERR_TO_STDOUT": "", "SUBMITIT_EXECUTOR": "local", "SUBMITIT_LOCAL_WITH_SHELL": ""}
            process = subprocess.Popen([sys.executable, "-m", "submitit.local._local", str(self.folder)],
                                       env=child_env, stdin=subprocess.DEVNULL, start_new_session=True)
            return LocalJob(folder=self.folder, job_id=str(process.pid), process=process, tasks=list(range(ntasks)))

    executor = DetachedLocalExecutor(folder=folder)
    executor.update_parameters(timeout_min=LOCAL_TIMEOUT_MIN)
    return executor


class SubmititSpawner:
    """`--launcher local-submitit`: each queue item a job of submitit's local executor, on the GPUs
    the supervisor leased for it (a Spawner, see cifar_tui.supervisor)."""

    schedules_itself = False
    name = "local-submitit"

    def __call__(self, ws: Workspace, item: dict, *, run_id: str, cfg: ExperimentConfig | None, nproc: int | None,
                 torchrun_args: list[str] | None, env: dict[str, str]) -> Launched:
        if torchrun_args:
            raise ConfigError("--launcher local-submitit runs on this host only (no --nnodes / --master-addr)")
        from engine.record.job import run_engine

        if item.get("resume_of"):
            from .launch import recorded_processes

            nproc = recorded_processes(Path(ws.home) / run_id)[1]
        spec = job_spec(ws, item, run_id, cfg, nproc=nproc or 1, env=env)
        (Path(ws.home) / run_id).mkdir(parents=True, exist_ok=True)
        executor = _local_executor(jobs_folder(ws, self.name), spec.env)
        job = executor.submit(run_engine, spec.cmd, spec.env, os.getcwd(), spec.log_file, spec.distributed)
        store = ws.store()
        try:
            store.add_job(run_id, self.name, str(job.job_id), str(jobs_folder(ws, self.name)))
        finally:
            store.close()
        return Launched(run_id, Path(ws.home) / run_id, JobProcess(job, job._process))  # type: ignore[arg-type]


@dataclass
class SlurmOptions:
    partition: str | None = None
    gpus_per_node: int | None = None   # default: the run's processes per node (--nproc); none for CPU runs
    time_min: int = 24 * 60
    nodes: int = 1                     # a DDP run across nodes: one task per node
    nproc: int = 1                     # processes (GPUs) per node
    cpus_per_task: int | None = None   # default: one per process for CPU runs, the cluster's default otherwise
    array_parallelism: int | None = None
    dependency: str | None = None      # e.g. afterok:1234 (the distillation run after its teacher)


def warning_s(time_min: int) -> int:
    """Seconds before the time limit SLURM sends the warning signal (USR2: the engine checkpoints
    and stops): 2 minutes, a third of a short job. slurmctld looks every 30 s, so it may come up
    to 30 s earlier (for a 1-minute job: between 10 and 40 s after its start)."""
    return max(10, min(120, time_min * 20))


def _on_cpu(ws: Workspace, planned) -> bool:
    """Whether every planned run trains on the CPU (train.device=cpu): its job asks for no GPU."""
    for item, run_id, cfg, _ in planned:
        if cfg is None and item.get("resume_of"):
            try:
                cfg = load_config(str(Path(ws.home) / run_id / "config.yaml"))
            except ConfigError:
                return False
        if cfg is None or cfg.train.device != "cpu":
            return False
    return True


class SlurmLauncher:
    """`--launcher slurm`: the supervisor's queue submitted to SLURM through submitit, several runs
    as one job array. Takes no local GPU leases (`schedules_itself`)."""

    schedules_itself = True
    name = "slurm"

    def __init__(self, options: SlurmOptions):
        gpus = options.gpus_per_node
        if gpus is not None and 0 < gpus < options.nproc:
            raise ConfigError(f"--slurm-gpus-per-node {gpus}: fewer than the {options.nproc} processes per node (--nproc)")
        if options.time_min < 1:
            raise ConfigError(f"--slurm-time {options.time_min}: expected minutes, at least 1")
        self.options = options

    def gpus_per_node(self, on_cpu: bool) -> int:
        if self.options.gpus_per_node is not None:
            return self.options.gpus_per_node
        return 0 if on_cpu else self.options.nproc

    def executor(self, ws: Workspace, *, on_cpu: bool = False, folder: Path | None = None):
        import submitit

        o = self.options
        executor = submitit.SlurmExecutor(folder=folder or jobs_folder(ws), max_num_timeout=0)
        setup = [f"export {k}={v}" for k, v in _project_env().items()]
        setup.append(f"export {TASK_STARTED_VAR}=$(date +%s.%N)")  # the start event's job.task_started_at
        params = {"time": o.time_min, "nodes": o.nodes, "ntasks_per_node": 1, "job_name": "cifar-tui",
                  "signal_delay_s": warning_s(o.time_min), "setup": setup}
        gpus = self.gpus_per_node(on_cpu)
        if gpus:
            params["gpus_per_node"] = gpus
        cpus = o.cpus_per_task or (o.nproc if on_cpu and o.nproc > 1 else None)
        if cpus:
            params["cpus_per_task"] = cpus
        if o.partition:
            params["partition"] = o.partition
        if o.array_parallelism:
            params["array_parallelism"] = o.array_parallelism
        if o.dependency:
            params["dependency"] = o.dependency
        executor.update_parameters(**params)
        return executor

    def submit(self, ws: Workspace, planned: Sequence[tuple[dict, str, ExperimentConfig | None, list | None]]) -> list[str]:
        """Submit runs (queue item, run id, config, torchrun args): one job each, several as one
        array. Returns the job ids, in order. SubmissionRefused (one line naming the option) when
        sbatch refuses them: then nothing was queued."""
        from engine.record.job import run_engine

        on_cpu = _on_cpu(ws, planned)
        specs = [job_spec(ws, item, run_id, cfg, nproc=self.options.nproc, nnodes=self.options.nodes)
                 for item, run_id, cfg, _ in planned]
        for spec in specs:
            (Path(ws.home) / spec.run_id).mkdir(parents=True, exist_ok=True)
        calls = [(run_engine, s.cmd, s.env, os.getcwd(), s.log_file, s.distributed) for s in specs]
        try:
            jobs = self.submit_calls(ws, calls, on_cpu=on_cpu)
        except SubmissionRefused:
            for spec in specs:
                discard_unstarted(Path(ws.home) / spec.run_id)
            raise
        store = ws.store()
        try:
            for spec, job in zip(specs, jobs):
                store.add_job(spec.run_id, self.name, str(job.job_id), str(jobs_folder(ws)))
        finally:
            store.close()
        return [str(job.job_id) for job in jobs]

    def submit_calls(self, ws: Workspace, calls: Sequence[tuple], *, on_cpu: bool, folder: Path | None = None) -> list:
        """Submit functions with their arguments (one job each, several as one array): submitit's
        jobs. sbatch's refusal becomes SubmissionRefused, its files (pickles, script) removed."""
        try:
            executor = self.executor(ws, on_cpu=on_cpu, folder=folder)
        except RuntimeError as exc:  # submitit: no srun on PATH
            raise ConfigError(f"--launcher slurm: {exc}") from None
        root = (folder or jobs_folder(ws)).parent
        root.mkdir(parents=True, exist_ok=True)
        # One submission at a time per workspace: submitit writes a submission's pickles and script into
        # this shared folder before sbatch answers, and a refused one removes what it wrote. Without the
        # lock a refusal in one CLI removed another CLI's files mid-submission (seen under load).
        with open(root / ".submit.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            before = set(root.iterdir())
            try:
                with contextlib.redirect_stderr(io.StringIO()):  # submitit prints sbatch's stderr as well
                    with executor.batch():
                        jobs = [executor.submit(*call) for call in calls]
            except Exception as exc:  # noqa: BLE001 - sbatch missing or refusing: one line, nothing queued
                for path in set(root.iterdir()) - before:  # the array's pickles, the job script
                    if path.is_file() or path.is_symlink():
                        path.unlink(missing_ok=True)
                raise SubmissionRefused(refusal_line(exc, self.options, self.gpus_per_node(on_cpu))) from None
        return jobs


class SubmissionRefused(ConfigError):
    """sbatch refused a submission (an unknown partition, a time over the limit): nothing queued."""


# sbatch's reasons (its last line) and the option each names
REFUSALS = (
    ("invalid partition", "--slurm-partition {partition}", "SLURM has no such partition (sinfo lists them)"),
    ("time limit", "--slurm-time {time}", "over the partition's time limit (sinfo -o '%P %l' shows it)"),
    ("node configuration is not available", "--slurm-gpus-per-node {gpus} / --nproc {nproc} / --nnodes {nodes}",
     "no node of the partition has that many GPUs or CPUs (sinfo -o '%P %c %G' shows them)"),
)


def refusal_line(exc: BaseException, options: SlurmOptions, gpus: int) -> str:
    """sbatch's refusal as one line naming the option it is about."""
    text = str(exc).strip()
    if isinstance(exc, FileNotFoundError) and Path(exc.filename or "").name == "sbatch":
        return "--launcher slurm: sbatch not found (is this a SLURM login node?)"
    last = next((line for line in reversed(text.splitlines()) if line.strip()), type(exc).__name__)
    reason = last.split("error:", 1)[-1].strip().removeprefix("Batch job submission failed:").strip()
    for needle, option, why in REFUSALS:
        if needle in reason.lower():
            named = option.format(partition=options.partition or "(default)", time=options.time_min, gpus=gpus,
                                  nproc=options.nproc, nodes=options.nodes)
            return f"{named}: {why}; sbatch: {reason}"
    return f"--launcher slurm: sbatch refused the job: {reason}"


def cancel_job(job: dict) -> None:
    """Cancel a run's batch job (scancel: SIGTERM to its processes, the graceful stop; the local
    executor's controller gets SIGTERM)."""
    if job["launcher"] == "slurm":
        try:
            subprocess.run(["scancel", str(job["job_id"])], capture_output=True, text=True, timeout=60, check=True)
        except (OSError, subprocess.SubprocessError) as exc:
            detail = (getattr(exc, "stderr", None) or "").strip() or getattr(exc, "strerror", None) or exc
            raise ConfigError(f"cannot cancel SLURM job {job['job_id']} of run {job['run_id']}: scancel: "
                              f"{detail}") from None
    else:
        try:
            os.kill(int(job["job_id"]), signal.SIGTERM)
        except (ProcessLookupError, ValueError):
            pass


def slurm_states(job_ids: Sequence[str]) -> dict[str, str] | None:
    """{job id: SLURM state} of the jobs squeue still knows (an array's tasks one by one), from one
    squeue call; None when squeue cannot answer (not a SLURM host, controller down). A job squeue
    no longer lists has ended (it forgets ended jobs after MinJobAge)."""
    if not job_ids:
        return {}
    try:
        out = subprocess.run(["squeue", "--array", "--noheader", "--format=%i %T",
                              f"--jobs={','.join(sorted({j.split('_')[0] for j in job_ids}))}"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        # an id squeue has forgotten is an error when it is the only one asked about
        return {} if "Invalid job id" in out.stderr else None
    states = {}
    for line in out.stdout.splitlines():
        job_id, _, state = line.strip().partition(" ")
        if job_id:
            states[job_id] = state.strip()
    return states


ENDED_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL",
                "DEADLINE"}


def refresh_pending(store) -> list[str]:
    """Ask the scheduler about submitted jobs whose engine never started; those it says ended are
    marked `lost` (listed as failed). Returns their run ids. Best-effort: no answer, no change."""
    from engine.record.status import pid_alive

    asked = store.pending_jobs()
    slurm = slurm_states([j["job_id"] for j in asked if j["launcher"] == "slurm"])
    still = {j["run_id"] for j in store.pending_jobs()}  # an engine that started while squeue answered is not
    lost = []
    for job in asked:  # and a job submitted meanwhile was not asked about: the next look asks
        if job["run_id"] not in still:
            continue
        if job["launcher"] == "slurm":
            if slurm is None:
                continue
            state = slurm.get(str(job["job_id"]))
            ended = state is None or state.split()[0] in ENDED_STATES
        else:
            ended = not pid_alive(int(job["job_id"]))  # the controller is gone
        if ended:
            store.set_job_state(job["run_id"], "lost")
            lost.append(job["run_id"])
    return lost
