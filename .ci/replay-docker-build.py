#!/usr/bin/env python3
"""Replays the Dockerfile's build stage without Docker.

Copies exactly the paths its COPY lines name (minus what .dockerignore
leaves out) into an empty folder, runs its RUN lines there in order, offline,
and checks that every file the later stages copy `--from` it exists. A COPY
that misses something the build reads fails here as it would in
`docker build`.

Usage: replay-docker-build.py [Dockerfile]   (from the build context)
"""

import fnmatch
import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import tempfile


def instructions(text):
    """(keyword, arguments) per instruction, continuations joined."""
    logical, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        logical.append(current + stripped)
        current = ""
    if current:
        logical.append(current)
    for entry in logical:
        keyword, _, rest = entry.partition(" ")
        yield keyword.upper(), rest.strip()


def stages(text):
    """[(name, [(keyword, arguments)])] in the Dockerfile's order."""
    result = []
    for keyword, rest in instructions(text):
        if keyword == "FROM":
            words = rest.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            result.append((name, []))
        elif result:
            result[-1][1].append((keyword, rest))
    return result


def ignored(context, relative):
    patterns = []
    ignore_file = context / ".dockerignore"
    if ignore_file.exists():
        for line in ignore_file.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                patterns.append(line.rstrip("/"))
    parts = pathlib.PurePosixPath(relative).parts
    for pattern in patterns:
        for depth in range(1, len(parts) + 1):
            if fnmatch.fnmatch("/".join(parts[:depth]), pattern):
                return True
    return False


def copy(context, root, cwd, arguments):
    words = [w for w in shlex.split(arguments) if not w.startswith("--")]
    *sources, destination = words
    target = root / destination.lstrip("/") if destination.startswith("/") else cwd / destination
    into_folder = destination.endswith("/") or len(sources) > 1
    for source in sources:
        path = context / source
        if not path.exists():
            sys.exit(f"COPY {source}: not in the build context")
        if path.is_dir():
            for file in sorted(path.rglob("*")):
                relative = file.relative_to(context)
                if file.is_file() and not ignored(context, relative):
                    out = target / file.relative_to(path)
                    out.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(file, out)
        else:
            out = target / path.name if into_folder else target
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, out)


def main():
    dockerfile = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "Dockerfile")
    context = dockerfile.resolve().parent
    all_stages = stages(dockerfile.read_text())
    from_names = {
        word.split("=", 1)[1]
        for _, steps in all_stages
        for keyword, rest in steps
        if keyword == "COPY"
        for word in rest.split()
        if word.startswith("--from=")
    }
    built = [(name, steps) for name, steps in all_stages if name in from_names]
    if len(built) != 1:
        sys.exit(f"expected one build stage copied from, found {[n for n, _ in built]}")
    name, steps = built[0]

    # Everything the stage copies, on its own, must be a workspace cargo can
    # load: no RUN line may be needed to make the manifests whole.
    copied = pathlib.Path(tempfile.mkdtemp(prefix="docker-copies-"))
    for keyword, rest in steps:
        if keyword == "COPY":
            copy(context, copied, copied, rest)
    subprocess.run(
        ["cargo", "metadata", "--offline", "--locked", "--no-deps", "--format-version", "1"],
        cwd=copied, env={**os.environ, "CARGO_NET_OFFLINE": "true"},
        check=True, stdout=subprocess.DEVNULL,
    )
    shutil.rmtree(copied)
    print("the copied paths alone load as a workspace", flush=True)

    root = pathlib.Path(tempfile.mkdtemp(prefix="docker-build-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARGO_TARGET")}
    env["CARGO_NET_OFFLINE"] = "true"
    cwd = root
    print(f"replaying stage {name!r} in {root}", flush=True)
    for keyword, rest in steps:
        if keyword == "WORKDIR":
            cwd = root / rest.lstrip("/") if rest.startswith("/") else cwd / rest
            cwd.mkdir(parents=True, exist_ok=True)
        elif keyword == "COPY":
            print(f"COPY {rest}", flush=True)
            copy(context, root, cwd, rest)
        elif keyword == "ENV":
            words = shlex.split(rest)
            pairs = [w.split("=", 1) for w in words] if "=" in words[0] else [words[:2]]
            env.update({key: value for key, value in pairs})
        elif keyword == "RUN":
            print(f"RUN {rest}", flush=True)
            subprocess.run(["sh", "-c", rest], cwd=cwd, env=env, check=True)
        else:
            sys.exit(f"{keyword}: not something this replay knows how to do")

    for _, later in all_stages:
        for keyword, rest in later:
            words = rest.split()
            if keyword == "COPY" and f"--from={name}" in words:
                for source in [w for w in words if not w.startswith("--")][:-1]:
                    if not (root / source.lstrip("/")).exists():
                        sys.exit(f"COPY --from={name} {source}: the build did not make it")
                    print(f"built {source}: {(root / source.lstrip('/')).stat().st_size} bytes")
    shutil.rmtree(root)


if __name__ == "__main__":
    main()
