"""A project bundle is hostile input: validated whole before anything is written, imported all or nothing, and a
damaged or hostile bundle is refused with one line saying what is wrong."""

from __future__ import annotations

import hashlib
import json
import struct
import zipfile
import zlib
from pathlib import Path

import pytest

from studio.config import load_settings
from studio.export.bundle import export_bundle, import_bundle
from studio.export.commands import import_bundle_command
from studio.services import build_services
from studio.services.errors import ValidationError
from tests.core_services.helpers import png_bytes, png_header_only

HTML = b"<html><body><script>fetch('/gradio_api/upload', {method: 'POST'})</script></body></html>"


@pytest.fixture
def bundle(sqlite_services, tmp_path) -> Path:
    """A small real bundle: a project, a character with a reference picture, a scene with two shots, one take."""
    services = sqlite_services
    project = services.projects.create("Harbour", width=32, height=32, fps=8)
    mara = services.characters.create(project.id, "Mara")
    services.characters.add_reference(mara.id, "mara.png", png_bytes(color=(200, 10, 10)))
    scene = services.storyboard.add_scene(project.id, "a harbour at dawn")
    first = services.storyboard.add_shot(scene.id, "wide, <mara> waits", characters=[mara.id])
    services.storyboard.add_shot(scene.id, "close-up")
    services.takes.add_take(first.id, None, b"take video", png_bytes(color=(9, 9, 9)), None, 1, {})
    return export_bundle(services, project.id, tmp_path / "harbour.zip").path


@pytest.fixture
def target(tmp_path):
    """An empty studio to import into; records every write the asset store starts."""
    services = build_services(load_settings(data_dir=tmp_path / "elsewhere"))
    writes = []
    real_add = services.assets._add

    def recording_add(*args, **kwargs):
        writes.append(args)
        return real_add(*args, **kwargs)

    services.assets._add = recording_add
    services.writes = writes
    yield services
    services.close()


def members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def write_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


def rewrite(source: Path, target: Path, edit) -> Path:
    """Copy a bundle with `edit(files, manifest, rows)` applied (the dicts are edited in place)."""
    files = members(source)
    manifest, rows = json.loads(files["manifest.json"]), json.loads(files["rows.json"])
    edit(files, manifest, rows)
    files["manifest.json"], files["rows.json"] = json.dumps(manifest).encode(), json.dumps(rows).encode()
    return write_zip(target, files)


def swap_asset_content(files, manifest, rows, kind: str, data: bytes, mime: str | None = None) -> None:
    """Give the first asset of `kind` new bytes, with sha256 and size updated everywhere (a self-consistent lie)."""
    row = next(row for row in rows["assets"] if row["kind"] == kind)
    entry = next(entry for entry in manifest["assets"] if entry["id"] == row["id"])
    del files[entry["file"]]
    sha256 = hashlib.sha256(data).hexdigest()
    row.update(sha256=sha256, size_bytes=len(data), mime=mime or row["mime"])
    entry.update(sha256=sha256, size_bytes=len(data), file=f"assets/{sha256}.dat")
    files[entry["file"]] = data


def assert_refused(target, path: Path, match: str) -> str:
    """Refused with one line, before the asset store was asked to write anything; nothing is left."""
    with pytest.raises(ValidationError, match=match) as refusal:
        import_bundle(target, path)
    message = str(refusal.value)
    assert "\n" not in message and len(message) < 400, message
    assert target.writes == [], "the bundle was refused only after files were being written"
    assert target.projects.list() == []
    assert not [p for p in target.assets.root.rglob("*") if p.is_file()]
    return message


def deflated_member(path: Path, files: dict[str, bytes], name: str, segment_bytes: bytes, segments: int) -> Path:
    """Write `files` plus a member `name` whose deflate stream unpacks to `segments` x `segment_bytes` (built from
    one compressed segment repeated, so a GB-sized member costs milliseconds to make). Its CRC is left 0: a bomb
    need not be honest, and a reader must stop long before the end, where the CRC is checked."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    segment = compressor.compress(segment_bytes) + compressor.flush(zlib.Z_FULL_FLUSH)
    stream = segment * segments + b"\x03\x00"  # an empty final block ends the stream
    files = {**files, name: stream}
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in files.items():
            archive.writestr(
                member, data, compress_type=zipfile.ZIP_STORED if member == name else zipfile.ZIP_DEFLATED
            )
    # Mark the stored member as deflated, and declare its unpacked size, in its local and central headers.
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(name)
    unpacked = len(segment_bytes) * segments
    local = info.header_offset
    struct.pack_into("<HHHIII", raw, local + 8, 8, 0, 0, 0, len(stream), unpacked)
    struct.pack_into("<H", raw, local + 6, 0)
    central = next(
        offset
        for offset in _find_all(raw, b"PK\x01\x02")
        if raw[offset + 46 : offset + 46 + len(name)] == name.encode()
        and struct.unpack_from("<H", raw, offset + 28)[0] == len(name)
    )
    struct.pack_into("<HHHIII", raw, central + 10, 8, 0, 0, 0, len(stream), unpacked)
    path.write_bytes(bytes(raw))
    return path


def _find_all(data: bytearray, needle: bytes):
    start = data.find(needle)
    while start != -1:
        yield start
        start = data.find(needle, start + 1)


def test_the_bundle_imports_cleanly(bundle, target):
    report = import_bundle(target, bundle)
    assert report.project_name == "Harbour" and report.rows["shots"] == 2 and report.assets == 3
    assert target.writes  # the files went through the asset store's gate


def test_zip_bomb_is_refused_while_reading(bundle, target, tmp_path):
    """A 2 MB zip whose one asset unpacks to 2 GiB (its manifest and rows.json say so, honestly sized)."""
    files = members(bundle)
    manifest, rows = json.loads(files["manifest.json"]), json.loads(files["rows.json"])
    bomb_sha = hashlib.sha256(b"never computed by anyone").hexdigest()
    member = f"assets/{bomb_sha}.dat"
    size = 2 * 1024**3
    rows["assets"].append(dict(rows["assets"][0], id=999, sha256=bomb_sha, size_bytes=size, kind="latents"))
    manifest["assets"].append({"id": 999, "sha256": bomb_sha, "size_bytes": size, "file": member})
    files["manifest.json"], files["rows.json"] = json.dumps(manifest).encode(), json.dumps(rows).encode()
    path = deflated_member(tmp_path / "bomb.zip", files, member, bytes(1024 * 1024), 2048)
    assert path.stat().st_size < 3 * 1024 * 1024
    message = assert_refused(target, path, "zip bomb")
    assert member in message


def test_rows_json_bomb_is_refused_while_reading(bundle, target, tmp_path):
    """rows.json packed to about 1 MB that unpacks to 1 GiB of JSON whitespace."""
    files = members(bundle)
    del files["rows.json"]
    path = deflated_member(tmp_path / "rows-bomb.zip", files, "rows.json", b" " * (1024 * 1024), 1024)
    assert_refused(target, path, r"rows\.json unpacks to")


def test_rows_json_of_tiny_containers_is_refused_before_parsing(bundle, target, tmp_path):
    """`[{},{},...]` parses to 25 times its size in memory; rows never look like that."""
    files = members(bundle)
    files["rows.json"] = b'{"projects": [' + b"{}," * 300_000 + b"{}]}"
    assert_refused(target, write_zip(tmp_path / "dense.zip", files), "objects and lists")


def test_rows_json_over_the_setting_is_refused(bundle, tmp_path):
    def pad(files, manifest, rows):
        rows["projects"][0]["negative_prompt"] = "x" * 100_000

    path = rewrite(bundle, tmp_path / "big-rows.zip", pad)
    small = build_services(load_settings(data_dir=tmp_path / "small", bundle_rows_max_bytes=65536))
    try:
        with pytest.raises(ValidationError, match=r"more than 65,536 bytes \(setting bundle_rows_max_bytes\)"):
            import_bundle(small, path)
    finally:
        small.close()


def test_bundle_over_the_total_cap_is_refused(bundle, tmp_path):
    def big_video(files, manifest, rows):
        swap_asset_content(files, manifest, rows, "video", bytes(range(256)) * 8192)  # 2 MiB

    path = rewrite(bundle, tmp_path / "big.zip", big_video)
    small = build_services(load_settings(data_dir=tmp_path / "small", bundle_max_bytes=1024 * 1024))
    try:
        with pytest.raises(ValidationError, match=r"over the limit of 1,048,576 \(setting bundle_max_bytes\)"):
            import_bundle(small, path)
        assert small.projects.list() == []
    finally:
        small.close()


def test_asset_claiming_html_is_refused(bundle, target, tmp_path):
    def html(files, manifest, rows):
        swap_asset_content(files, manifest, rows, "video", HTML, mime="text/html")

    assert_refused(target, rewrite(bundle, tmp_path / "html.zip", html), "claims the type 'text/html'")


def test_markup_under_an_image_type_is_refused(bundle, target, tmp_path):
    def html(files, manifest, rows):
        swap_asset_content(files, manifest, rows, "video", HTML, mime="image/png")

    assert_refused(target, rewrite(bundle, tmp_path / "html-png.zip", html), "markup")


def test_png_bomb_inside_a_bundle_is_refused(bundle, target, tmp_path):
    def bomb(files, manifest, rows):
        swap_asset_content(files, manifest, rows, "reference", png_header_only(30000, 30000))

    assert_refused(target, rewrite(bundle, tmp_path / "png-bomb.zip", bomb), "far more pixels than the limit")


@pytest.mark.parametrize(
    "name", ["../../escaped.png", "/etc/escaped.png", "refs/../../escaped.png", "refs\\..\\escaped.png", "C:/x.png"]
)
def test_zip_slip_names_are_refused(bundle, target, tmp_path, name):
    files = members(bundle)
    files[name] = png_bytes()
    path = write_zip(tmp_path / "slip.zip", files)
    assert_refused(target, path, "absolute, with '..' or a drive")
    assert not (tmp_path / "escaped.png").exists() and not (tmp_path.parent / "escaped.png").exists()


def test_missing_rows_json_is_refused(bundle, target, tmp_path):
    files = members(bundle)
    del files["rows.json"]
    assert_refused(target, write_zip(tmp_path / "no-rows.zip", files), r"rows\.json is missing")


def test_asset_row_without_a_file_is_refused(bundle, target, tmp_path):
    def drop_entry(files, manifest, rows):
        entry = manifest["assets"].pop()
        del files[entry["file"]]

    assert_refused(target, rewrite(bundle, tmp_path / "missing.zip", drop_entry), "lists no file for asset")


def test_file_the_manifest_does_not_list_is_refused(bundle, target, tmp_path):
    files = members(bundle)
    files["assets/extra.bin"] = b"what is this"
    assert_refused(target, write_zip(tmp_path / "extra.zip", files), "assets/extra.bin, which its manifest")
    files = members(bundle)
    files["payload.html"] = HTML
    assert_refused(target, write_zip(tmp_path / "extra-html.zip", files), "payload.html")


def test_listed_file_without_an_asset_row_is_refused(bundle, target, tmp_path):
    def extra(files, manifest, rows):
        data = b"an asset no row names"
        sha256 = hashlib.sha256(data).hexdigest()
        manifest["assets"].append({"id": 555, "sha256": sha256, "size_bytes": len(data), "file": f"assets/{sha256}"})
        files[f"assets/{sha256}"] = data

    assert_refused(target, rewrite(bundle, tmp_path / "extra-asset.zip", extra), "rows.json has no row for asset")


def test_reference_to_a_row_outside_the_bundle_is_refused_before_writing(bundle, target, tmp_path):
    def dangling(files, manifest, rows):
        rows["shots"][0]["scene_id"] = 4242

    message = assert_refused(
        target, rewrite(bundle, tmp_path / "dangling.zip", dangling), "points at no row of scenes"
    )
    assert "4242" in message


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda rows: rows["shots"][0].update(num_frames="nine"), "num_frames must be a int"),
        (lambda rows: rows["shots"][0].update(created_at={"__datetime__": "yesterday"}), "must be a date and time"),
        (lambda rows: rows["shots"][0].pop("caption"), "caption is missing"),
        (lambda rows: rows["shots"].append(dict(rows["shots"][0])), "repeats the id"),
        (lambda rows: rows["projects"].append(dict(rows["projects"][0], id=77, name="Other")), "holds 2 projects"),
        (lambda rows: rows["takes"].append(dict(rows["takes"][0], id=99)), "repeats shot_id, number"),
        (lambda rows: rows["scenes"].insert(0, "a scene"), "is not a mapping"),
        (lambda rows: rows.update(users=[]), "tables this studio does not know: users"),
        (lambda rows: rows["takes"][0].update(params={"a": json.loads("[" * 40 + "]" * 40)}), "nested deeper"),
    ],
    ids=[
        "wrong-type",
        "bad-datetime",
        "missing-column",
        "repeated-id",
        "two-projects",
        "take-number-twice",
        "row-not-mapping",
        "unknown-table",
        "deep-json",
    ],
)
def test_rows_json_is_checked_against_the_schema(bundle, target, tmp_path, edit, match):
    path = tmp_path / "schema.zip"
    files = members(bundle)
    rows = json.loads(files["rows.json"])
    edit(rows)
    files["rows.json"] = json.dumps(rows).encode()
    assert_refused(target, write_zip(path, files), match)


def test_deeply_nested_rows_json_is_a_clear_refusal(bundle, target, tmp_path):
    files = members(bundle)
    files["rows.json"] = b'{"projects": ' + b"[" * 5000 + b"]" * 5000 + b"}" + b" " * 200_000
    assert_refused(target, write_zip(tmp_path / "deep.zip", files), "nested deeper than")


def test_not_a_zip_is_a_clear_refusal(target, tmp_path, bundle):
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(bundle.read_bytes()[:-200])
    assert_refused(target, truncated, "not a readable zip")


def test_cli_prints_one_error_line(bundle, target, tmp_path, capsys):
    files = members(bundle)
    del files["rows.json"]
    path = write_zip(tmp_path / "no-rows.zip", files)

    class Args:
        pass

    args = Args()
    args.bundle, args.name = str(path), None
    assert import_bundle_command(args, target) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "rows.json is missing" in err


def test_bundled_file_names_are_sanitised(bundle, target, tmp_path):
    def hostile_name(files, manifest, rows):
        rows["assets"][0]["original_name"] = "../../<img src=x onerror=alert(1)>.png"

    report = import_bundle(target, rewrite(bundle, tmp_path / "names.zip", hostile_name))
    names = {view.original_name for view in map(target.assets.get, range(1, report.assets + 1))}
    assert "_img src_x onerror_alert_1_.png" in names
    assert not any("/" in name or "<" in name for name in names if name)
