"""`modalink build SOURCE... --out DIR`, `modalink validate DIR` and `modalink stages`.

Exit codes: 0 all videos processed, 3 finished but some videos failed (see videos.jsonl and
errors.log), 2 bad input (one line on stderr, no traceback), 1 the run itself crashed (the storage
stopped answering or a disk is full: one line too).
"""
from __future__ import annotations

import argparse
import atexit
import json
import logging
import os
import signal
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modalink.prefect_server import TemporaryServer

EXIT_OK, EXIT_CRASH, EXIT_USAGE, EXIT_SOME_FAILED = 0, 1, 2, 3


class UsageError(Exception):
    """Bad input from the user: printed as one line."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modalink", description="In-the-wild video to a synchronized "
                                     "audio-video-text dataset (the MODALINK method).")
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="build or extend a dataset from videos, playlists, files or folders")
    build.add_argument("sources", nargs="+", metavar="SOURCE", help="video URL, playlist URL, video file or folder")
    build.add_argument("--out", required=True, help="dataset folder (created if missing)")
    build.add_argument("--config", help="TOML or YAML file with sections such as [vad] or [asr]")
    build.add_argument("--language", help="BCP-47 language of the speech (default ar-EG)")
    build.add_argument("--asr", help="transcription backend: google (default) or whisper")
    build.add_argument("--asr-model", help="whisper model name or local path (default tiny.en for English, else base)")
    build.add_argument("--workers", type=int, help="segments processed concurrently (default 4)")
    build.add_argument("--runner", choices=["threads", "dask"], help="task runner (default threads)")
    build.add_argument("--dask-address", help="scheduler of a Dask cluster, e.g. tcp://10.0.0.5:8786 "
                       "(default with --runner dask: a local cluster of --workers processes)")
    build.add_argument("--set", action="append", default=[], metavar="SECTION.OPTION=VALUE",
                       help="override any config option, e.g. --set faces.fps=2 (repeatable)")
    build.add_argument("--verbose", action="store_true", help="show every task's log lines")
    validate = commands.add_parser("validate", help="check a dataset: every record against the schema, every file present")
    validate.add_argument("dataset", help="dataset folder")
    annotate = commands.add_parser("annotate", help="export tasks for Label Studio, or import its labels back",
                                   description="--to label-studio: a labeling config and tasks; "
                                   "--from EXPORT.json: a Label Studio JSON export back into the dataset")
    annotate.add_argument("dataset", help="dataset folder (or s3://bucket/prefix)")
    way = annotate.add_mutually_exclusive_group(required=True)
    way.add_argument("--to", choices=["label-studio"], help="write config.xml and tasks.json for Label Studio")
    way.add_argument("--from", dest="from_export", metavar="EXPORT.json", help="a Label Studio JSON export to import")
    annotate.add_argument("--out", help="folder for config.xml and tasks.json (default DIR/label-studio)")
    annotate.add_argument("--media", choices=["local", "s3"], help="media URLs for Label Studio's local file serving "
                          "(default for a folder) or s3:// for a cloud storage connection (default for a bucket)")
    annotate.add_argument("--document-root", help="LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT (default: the dataset's parent)")
    annotate.add_argument("--s3-url", help="with --media s3 for a local dataset: where its copy lives, s3://bucket/prefix")
    annotate.add_argument("--classes", help="emotion classes, comma separated (default MELD's seven: "
                          "neutral,joy,surprise,anger,sadness,disgust,fear); the import defaults to the export's")
    annotate.add_argument("--sentiment", action="store_true", help="also ask for sentiment (positive/neutral/negative)")
    annotate.add_argument("--valence-arousal", choices=["rating", "number"],
                          help="also ask for valence and arousal, 1 to 9, as stars or as numbers")
    export = commands.add_parser("export", help="(re)write a dataset's exports (WebDataset, Hugging Face, lhotse, "
                                 "MELD CSV, dataset card) that are missing or stale")
    export.add_argument("dataset", help="dataset folder (or s3://bucket/prefix)")
    export.add_argument("--only", nargs="+", metavar="NAME", help="only these exports (see the names it prints)")
    export.add_argument("--force", action="store_true", help="rewrite them even when they are current")
    export.add_argument("--config", help="TOML or YAML file (its [export] section); default: the last run's config")
    export.add_argument("--set", action="append", default=[], metavar="export.OPTION=VALUE",
                        help="override an option, e.g. --set export.split_seed=7 (repeatable)")
    report = commands.add_parser("report", help="(re)write DIR/report.html, a page to look at the dataset, "
                                 "and print its path")
    report.add_argument("dataset", help="dataset folder (or s3://bucket/prefix)")
    stages = commands.add_parser("stages", help="list the registered segment stages in the order they run")
    stages.add_argument("--json", action="store_true", help="one JSON object per stage")
    return parser


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    from modalink.config import deep_update, parse_override

    overrides: dict[str, Any] = {}
    for item in args.set:
        deep_update(overrides, parse_override(item))
    flags = {("asr", "language"): args.language, ("asr", "backend"): args.asr, ("asr", "model"): args.asr_model,
             ("run", "workers"): args.workers, ("run", "runner"): args.runner,
             ("run", "dask_address"): args.dask_address}
    for (section, option), value in flags.items():
        if value is not None:
            overrides.setdefault(section, {})[option] = value
    return overrides


def check_sources(sources: list[str]) -> None:
    from tasks.acquire import is_url, local_path

    for source in sources:
        if not is_url(source) and not local_path(source).exists():
            raise UsageError(f"no such file or folder: {source}")


def check_writable(out: str, config) -> None:
    from modalink.shared_media import check_shareable
    from modalink.storage import StorageError, open_storage

    try:
        storage = open_storage(out)
        check_shareable(storage, config.run)
        storage.check()
    except StorageError as exc:
        raise UsageError(f"--out {out}: {exc}") from None


def quiet_logging(verbose: bool) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if not verbose:
        for name in ("prefect.task_runs", "prefect.events", "prefect._internal", "absl", "tensorflow"):
            logging.getLogger(name).setLevel(logging.WARNING)


class ExpectedFaults(logging.Filter):
    """On the terminal, a log line about an expected fault (a full disk, an S3 server that does not
    answer) keeps its message, with the fault's, and loses its traceback; the Prefect server keeps
    the whole record."""

    def filter(self, record: logging.LogRecord) -> bool:
        from modalink.storage import no_space_left, storage_unreachable

        error = record.exc_info[1] if record.exc_info else None
        fault = no_space_left(error) or storage_unreachable(error)
        if fault is not None:
            message = record.getMessage()
            said = str(fault) in message or repr(fault) in message
            record.msg, record.args = message if said else f"{message}: {fault}", None
            record.exc_info = record.exc_text = None
        return True


def terminal_without_fault_tracebacks() -> None:
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, ExpectedFaults) for f in handler.filters):
            handler.addFilter(ExpectedFaults())


def print_summary(summary: dict[str, Any]) -> None:
    videos, segments = summary["videos"], summary["segments"]
    dropped = ", ".join(f"{count} {reason.replace('_', ' ')}" for reason, count in segments["dropped"].items()) or "none"
    lines = [
        "",
        f"MODALINK dataset: {summary['dataset']}",
        f"  videos:          {videos['ok']} ok, {videos['failed']} failed"
        + (f" ({videos['reused']} unchanged since an earlier run, reused)" if videos.get("reused") else ""),
        *(f"    failed {v['video_id']}: {v['error']}" for v in summary["failed_videos"]),
        f"  segments kept:   {segments['kept']} (dropped: {dropped})",
        f"  transcripts:     {segments['transcription_failed']} failed, {segments['transcript_empty']} empty, "
        f"{segments.get('transcript_suspect', 0)} suspect",
        f"  manifest:        {summary['dataset']}/manifest.jsonl ({segments['manifest_total']} segments in all)",
        f"  errors:          {summary['errors']}" + (" (see errors.log)" if summary["errors"] else ""),
        f"  wall time:       {summary['wall_s']:.1f} s",
    ]
    if summary.get("up_to_date"):
        lines.append("  up to date:      every video was processed and published by an earlier run with this "
                     "config; no Prefect flow was needed")
    print("\n".join(lines), file=sys.stderr)


def run_build(args: argparse.Namespace, server: TemporaryServer | None) -> int:
    """`server`, started before anything else, comes up while Prefect and the steps are imported and
    the model loads; it is used only if Prefect's settings name no other."""
    from modalink.config import Config
    from modalink.stages import discover
    from tasks.acquire import portable_source

    discover()  # the sections of added stages are config sections too
    check_sources(args.sources)
    sources = [portable_source(source) for source in args.sources]  # a path that is not UTF-8: its file:// URI
    config = Config.load(args.config, overrides_from(args))
    check_writable(args.out, config)
    quiet_logging(args.verbose)
    out = args.out if "://" in args.out else str(Path(args.out).expanduser())
    if server and not server.needed():  # a Prefect profile names a server of its own
        server.stop()
        server = None
    if server:  # a flow would only read caches: say so without starting a server for it
        from flows.plan import finished_run

        if (summary := finished_run(sources, out, config.to_dict())) is not None:
            print_summary(summary)
            return EXIT_OK
    from flows.build import build_dataset, prepare_stages, preload_step_libraries
    from modalink.result_storage import holds_no_cached_steps
    from modalink.storage import open_storage

    prepare_stages(config)  # a model that cannot load fails here, in one line
    if config.run.runner == "threads" and server and holds_no_cached_steps(open_storage(out)):
        # A new dataset: every step will run, so the stages' libraries load now, on the core that the
        # starting server leaves idle (BENCHMARKS.md). Not on a re-run: one that is all cached would
        # wait for that import to finish before it exits.
        preload_step_libraries(config)
    terminal_without_fault_tracebacks()  # Prefect's handlers are in place once it is imported
    with server.serving() if server else nullcontext():
        summary = build_dataset(sources=sources, out=out, config=config.to_dict())
    print_summary(summary)
    return EXIT_SOME_FAILED if summary["videos"]["failed"] else EXIT_OK


def run_validate(args: argparse.Namespace) -> int:
    from modalink.records import MEDIA_FIELDS, read_jsonl, schema_errors

    root = Path(args.dataset)
    if not (root / "manifest.jsonl").is_file():
        raise UsageError(f"no manifest.jsonl in {root}")
    records = read_jsonl(root / "manifest.jsonl")
    problems = schema_errors(records)
    problems += [f"{r['segment_id']}: missing {r[k]}" for r in records for k in MEDIA_FIELDS
                 if isinstance(r.get(k), str) and not (root / r[k]).is_file()]
    for problem in problems:
        print(problem, file=sys.stderr)
    print(json.dumps({"segments": len(records), "problems": len(problems)}))
    return EXIT_OK if not problems else EXIT_SOME_FAILED


def run_export(args: argparse.Namespace) -> int:
    """The exports of an existing dataset from its published records, under the last run's config
    (run_summary.json) with --config and --set on top."""
    from modalink.config import Config, deep_update, parse_override, read_config_file
    from modalink.exports import exporters
    from modalink.stages import discover
    from modalink.storage import open_storage
    from tasks.publish import merged_records_as_published, published_config, rewrite_exports

    discover()
    dataset = args.dataset if "://" in args.dataset else str(Path(args.dataset).expanduser())
    storage = open_storage(dataset)
    if storage.read_text("manifest.jsonl") is None:
        raise UsageError(f"no manifest.jsonl in {dataset}")
    known = [exporter.name for exporter in exporters()]
    if args.only and (unknown := [name for name in args.only if name not in known]):
        raise UsageError(f"--only: no export named {', '.join(unknown)} (known: {', '.join(known)})")
    config = published_config(storage) or {}
    config = {name: options for name, options in config.items() if name in Config().sections()}
    if args.config:
        deep_update(config, read_config_file(Path(args.config)))
    for item in args.set:
        deep_update(config, parse_override(item))
    config = Config.load(overrides=config).to_dict()
    for name, rewritten, seconds in rewrite_exports(storage, merged_records_as_published(storage, config),
                                                   args.only, args.force):
        print(f"  {name:16} {'written' if rewritten else 'current'} ({seconds:.2f} s)", file=sys.stderr)
    return EXIT_OK


def run_report(args: argparse.Namespace) -> int:
    """DIR/report.html from the published records (tasks/report.py), rewritten whether or not it is current."""
    from modalink.stages import discover
    from modalink.storage import LocalStorage, open_storage
    from tasks.publish import merged_records_as_published, rewrite_exports
    from tasks.report import REPORT

    discover()
    dataset = args.dataset if "://" in args.dataset else str(Path(args.dataset).expanduser())
    storage = open_storage(dataset)
    if storage.read_text("manifest.jsonl") is None:
        raise UsageError(f"no manifest.jsonl in {dataset}")
    rewrite_exports(storage, merged_records_as_published(storage), [REPORT], force=True)
    print(storage.root / REPORT if isinstance(storage, LocalStorage) else f"{dataset.rstrip('/')}/{REPORT}")
    return EXIT_OK


def run_stages_command(args: argparse.Namespace) -> int:
    from modalink.stages import segment_stages

    stages = segment_stages()
    if args.json:
        print("\n".join(json.dumps(stage.describe()) for stage in stages))
        return EXIT_OK
    rows = [("#", "stage", "runs on", "section", "cache key also reads", "needs", "drops", "module")]
    for number, stage in enumerate(stages, start=1):
        d = stage.describe()
        rows.append((str(number), d["name"], "chunk" if d["per_chunk"] else "segment", d["section"] or "-",
                     ", ".join(d["also_reads"]) or "-", ", ".join(d["needs"]) or "-", ", ".join(d["drops"]) or "-",
                     d["module"]))
    widths = [max(len(row[k]) for row in rows) for k in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return EXIT_OK


def run_annotate(args: argparse.Namespace) -> int:
    from modalink import annotate

    dataset = args.dataset if "://" in args.dataset else str(Path(args.dataset).expanduser())
    if "://" not in dataset and not (Path(dataset) / "manifest.jsonl").is_file():
        raise UsageError(f"no manifest.jsonl in {dataset}")
    try:
        if args.to:
            settings = annotate.Settings(classes=annotate.parse_classes(args.classes), sentiment=args.sentiment,
                                         valence_arousal=args.valence_arousal)
            done = annotate.run_export(dataset, args.out, settings, args.media, args.document_root, args.s3_url)
            print(f"MODALINK annotation export: {done['count']} tasks ({done['predictions']} with pre-labels), "
                  f"media {done['media']}\n  config: {done['config']}\n  tasks:  {done['tasks']}", file=sys.stderr)
            return EXIT_OK
        override = None
        if args.classes:  # else the classes of the last export (DIR/annotation.json), or MELD's
            from modalink.storage import open_storage

            override = annotate.Settings.load(open_storage(dataset)) or annotate.Settings()
            override.classes = annotate.parse_classes(args.classes)
        result = annotate.run_import(dataset, args.from_export, override)
        annotate.print_import(result, dataset)
        return EXIT_OK
    except annotate.AnnotationError as exc:
        for problem in exc.problems:
            print(f"modalink: error: {problem}", file=sys.stderr)
        return EXIT_USAGE


def staging_folder(args: argparse.Namespace) -> Path:
    """Where the command writes: the staging folder of the dataset it builds or changes."""
    from modalink.storage import open_storage

    dataset = getattr(args, "out" if args.command == "build" else "dataset", None) or "."
    return open_storage(dataset if "://" in dataset else str(Path(dataset).expanduser())).staging_dir()


def interrupt(signum: int, frame: Any) -> None:
    """SIGTERM ends a run the way Ctrl-C does: the temporary server is stopped, and the same command
    resumes the run."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    from modalink.prefect_server import TemporaryServer, offline_defaults

    offline_defaults()  # before Prefect is imported
    from modalink.config import ConfigError
    from modalink.storage import StorageError, no_space_left, no_space_message

    args = build_parser().parse_args(argv)
    previous_sigterm = signal.signal(signal.SIGTERM, interrupt)  # `kill` or a CI timeout: as Ctrl-C
    server = TemporaryServer.start_early() if args.command == "build" else None
    try:
        if args.command == "build":
            return run_build(args, server)
        if args.command == "annotate":
            return run_annotate(args)
        if args.command == "export":
            return run_export(args)
        if args.command == "report":
            return run_report(args)
        return run_validate(args) if args.command == "validate" else run_stages_command(args)
    except (UsageError, ConfigError) as exc:
        print(f"modalink: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # the storage failed during the run, after retries, or a disk is full
        full = no_space_left(exc)
        if full is None and not isinstance(exc, StorageError):
            raise
        print(f"modalink: error: {no_space_message(full, staging_folder(args)) if full else exc}", file=sys.stderr)
        return EXIT_CRASH
    except KeyboardInterrupt:
        print("modalink: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    finally:
        if server:
            server.stop()
        signal.signal(signal.SIGTERM, previous_sigterm)


def command(argv: list[str] | None = None) -> None:
    """The `modalink` command: `main`, then an exit without the interpreter's teardown.

    Once TensorFlow, CTranslate2 and Prefect are loaded, that teardown (freeing every module, then the
    libraries' own static destructors) is slow (BENCHMARKS.md), and a finished run has nothing left in
    it to write: the exit functions (logging's and Prefect's flushes) still run, and so do the streams'
    flushes. An exception leaves the ordinary way, with its traceback."""
    code = main(argv)
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    command()
