"""The commands: each takes the connection, the parsed arguments and the output, and returns an exit code.

All the fleet logic lives in `otafleet.fleet`; these only call it and print.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from otafleet import plans, shapes, windows
from otafleet.controller import summary
from otafleet.fleet import Deleted, DeviceFilter, TrackStatus, parse_mac
from otafleet.models import Delivery, Kind, Window
from otafleet.protocol import MODES
from otafleet_cli import views
from otafleet_cli.output import Output, fields
from otafleet_cli.stack import CliError, Connection

EXPLAIN_MODES = tuple(sorted(MODES - {"version"}))


def _kind(args: Any) -> Kind:
    return Kind.FS if getattr(args, "fs", False) else Kind.APP


# --- stack, products, releases ----------------------------------------------------------------------


def info(conn: Connection, args: Any, out: Output) -> int:
    s = conn.stack
    data = {
        "stack": s.name,
        "api_url": s.api_url,
        "update_url": f"{s.api_url}/update",
        "bucket": s.bucket,
        "devices_table": s.devices_table,
        "catalog_table": s.catalog_table,
        "region": s.region,
        "endpoint_url": s.endpoint_url,
    }
    human = fields(
        [
            ("stack", s.name),
            ("api url", s.api_url),
            ("update url", f"{s.api_url}/update"),
            ("bucket", s.bucket),
            ("devices table", s.devices_table),
            ("catalog table", s.catalog_table),
            ("region", s.region),
            ("aws endpoint", s.endpoint_url or "AWS"),
        ]
    )
    out.emit(data, human)
    return 0


def products(conn: Connection, args: Any, out: Output) -> int:
    found = conn.fleet.products()
    out.emit_rows([shapes.product_dict(p) for p in found], views.products_table(found), *views.product_rows(found))
    return 0


def product_create(conn: Connection, args: Any, out: Output) -> int:
    product, created = conn.fleet.save_product(
        args.product,
        platform=args.platform,
        delivery=Delivery(args.delivery) if args.delivery else None,
        enroll=args.enroll,
        auth_required=args.auth,
        allow_downgrade=args.allow_downgrade,
        default_channel=args.default_channel,
    )
    out.note(f"{'created' if created else 'updated'} product {product.name}")
    out.emit(shapes.product_dict(product), views.product_fields(product))
    return 0


def releases(conn: Connection, args: Any, out: Output) -> int:
    fleet = conn.fleet
    found = fleet.releases(args.product, with_rejections=True)
    channels = fleet.channels(args.product)
    data = [{**shapes.release_dict(r), "channels": shapes.serving(r, channels)} for r in found]
    keys = fleet.keys(args.product)
    out.emit_rows(data, views.releases_table(found, channels, keys), *views.release_rows(found, channels, keys))
    return 0


def release_revoke(conn: Connection, args: Any, out: Output) -> int:
    done = conn.fleet.revoke(args.product, args.version, _kind(args), force=args.force)
    r = done.release
    what = f"{r.product} {r.kind.value} {r.version}"
    out.note(f"{what} was revoked already" if done.already else f"{what} is revoked: no device is offered it")
    for name in done.serving:
        flag = " --fs" if r.kind is Kind.FS else ""
        out.note(
            f"{r.product}/{name} serves it and so offers nothing of it: "
            f"`otafleet channel set {r.product} {name} VERSION{flag}`"
        )
    out.emit(shapes.release_dict(r), views.release_fields(r))
    return 0


def product_delete(conn: Connection, args: Any, out: Output) -> int:
    return _show_deleted(out, conn.fleet.delete_product(args.product, force=args.force))


def _show_deleted(out: Output, deleted: Deleted) -> int:
    if deleted.unassigned:
        out.note(f"unassigned {len(deleted.unassigned)} device(s): `otafleet devices --unassigned` lists them")
    data = {"deleted": deleted.what, "items": deleted.items, "unassigned": list(deleted.unassigned)}
    out.emit(data, f"deleted {deleted.what}")
    return 0


# --- signing keys -----------------------------------------------------------------------------------


def key_add(conn: Connection, args: Any, out: Output) -> int:
    try:
        pem = Path(args.key_file).read_bytes()
    except OSError as bad:
        raise CliError(f"cannot read {args.key_file}: {bad.strerror}") from None
    key = conn.fleet.add_key(args.product, pem, args.name)
    out.note(f"{args.product} accepts uploads signed by key {key.name}; unsigned uploads and other keys are refused")
    out.emit(shapes.key_dict(key), views.keys_table([key], args.product))
    return 0


def key_list(conn: Connection, args: Any, out: Output) -> int:
    keys = conn.fleet.keys(args.product)
    out.emit([shapes.key_dict(k) for k in keys], views.keys_table(keys, args.product))
    return 0


def key_retire(conn: Connection, args: Any, out: Output) -> int:
    key = conn.fleet.retire_key(args.product, args.key)
    out.note(f"uploads signed by {key.name} are refused from now on; its releases stay")
    out.emit(shapes.key_dict(key), views.keys_table([key], args.product))
    return 0


# --- channels ---------------------------------------------------------------------------------------


def channel_set(conn: Connection, args: Any, out: Output) -> int:
    status = conn.fleet.set_channel(
        args.product,
        args.channel,
        args.version,
        _kind(args),
        args.percent,
        max_failure_rate=args.max_failure_rate,
        min_devices=args.min_devices,
        max_offers_per_minute=args.max_offers_per_minute,
        max_silence_excess=args.max_silence_excess,
    )
    return _show_tracks(out, [status])


def channels(conn: Connection, args: Any, out: Output) -> int:
    found = conn.fleet.channel_list(args.product)
    data = [shapes.channel_dict(c) for c in found]
    out.emit_rows(data, views.channels_table(found, args.product), *views.channel_rows(found))
    return 0


def channel_delete(conn: Connection, args: Any, out: Output) -> int:
    return _show_deleted(out, conn.fleet.delete_channel(args.product, args.channel))


def channel_show(conn: Connection, args: Any, out: Output) -> int:
    statuses = conn.fleet.channel_status(args.product, args.channel)
    catalog = conn.fleet.catalog(args.product)
    channel = catalog.channels.get(args.channel)
    window = (channel.window if channel else None) or catalog.product.window
    if window is not None:
        out.note(f"images are handed over {windows.describe(window)} (`otafleet window`)")
    if not statuses and not out.as_json:
        out.line(f"{args.product}/{args.channel} serves nothing yet")
        return 0
    return _show_tracks(out, statuses, many=True)


def window_set(conn: Connection, args: Any, out: Output) -> int:
    window = conn.fleet.set_window(args.product, args.window, tz=args.tz, channel=args.channel)
    return _show_window(out, args, window)


def window_clear(conn: Connection, args: Any, out: Output) -> int:
    return _show_window(out, args, conn.fleet.set_window(args.product, None, channel=args.channel))


def _show_window(out: Output, args: Any, window: Window | None) -> int:
    where = f"{args.product}/{args.channel}" if args.channel else args.product
    text = windows.describe(window) if window else None
    fallback = "its product's window, if any" if args.channel else "any time"
    out.emit(
        {"product": args.product, "channel": args.channel, "window": text},
        f"{where}: images are handed over {text or fallback}",
    )
    return 0


def channel_rollback(conn: Connection, args: Any, out: Output) -> int:
    return _show_tracks(out, [conn.fleet.rollback(args.product, args.channel, _kind(args))])


def channel_pause(conn: Connection, args: Any, out: Output) -> int:
    return _show_tracks(out, [conn.fleet.pause(args.product, args.channel, _kind(args))])


def channel_resume(conn: Connection, args: Any, out: Output) -> int:
    return _show_tracks(
        out, [conn.fleet.resume(args.product, args.channel, _kind(args), reset_counts=args.reset_counts)]
    )


def _show_tracks(out: Output, statuses: list[TrackStatus], *, many: bool = False) -> int:
    data: Any = [shapes.track_dict(s) for s in statuses] if many else shapes.track_dict(statuses[0])
    human = views.tracks_table(statuses, with_channel=True)
    out.emit(data, human)
    for advice in views.track_advice(statuses):
        out.note(advice)
    return 0


# --- the rollout controller -------------------------------------------------------------------------


@contextmanager
def _service_logs_held_back() -> Iterator[None]:
    """The controller logs JSON lines for CloudWatch on stdout; in the CLI they would mix into its own
    output (and --json), which already says what the run did."""
    from otafleet.observability import logger

    log = logger()
    level = log.log_level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


def rollout_tick(conn: Connection, args: Any, out: Output) -> int:
    with _service_logs_held_back():
        report = conn.controller.run()
    out.emit(summary(report), views.tick_text(report))
    if report.faults:
        raise CliError("the run was incomplete: " + "; ".join(report.faults))
    return 0


def rollout_status(conn: Connection, args: Any, out: Output) -> int:
    conn.fleet.channel_status(args.product, args.channel)  # a clear error for an unknown product/channel
    refreshes = 0
    while True:
        statuses = conn.controller.status(args.product, args.channel)
        if args.watch is None:
            out.emit([shapes.rollout_dict(s) for s in statuses], views.rollout_text(statuses))
            return 0
        if out.as_json:  # one JSON document per line and refresh, for scripts that follow it
            out.line(json.dumps(shapes.jsonable([shapes.rollout_dict(s) for s in statuses]), ensure_ascii=False))
        else:
            clear = "\x1b[H\x1b[2J" if out.stdout.isatty() else ""
            out.line(
                f"{clear}{args.product}/{args.channel} at {statuses[0].at if statuses else '-'}, "
                f"every {args.watch:g} s (Ctrl-C stops)\n{views.rollout_text(statuses)}"
            )
        refreshes += 1
        if args.iterations and refreshes >= args.iterations:
            return 0
        try:
            time.sleep(args.watch)
        except KeyboardInterrupt:
            return 0


def rollout_start(conn: Connection, args: Any, out: Output) -> int:
    try:
        stages = plans.parse_stages(args.stages)
        soak = plans.parse_duration(args.soak)
    except plans.InvalidPlan as bad:
        raise CliError(str(bad)) from None
    status = conn.fleet.start_plan(
        args.product,
        args.channel,
        args.version,
        _kind(args),
        stages=stages,
        soak_seconds=soak,
        min_success=args.min_success / 100,
        max_failure_rate=None if args.max_failure is None else args.max_failure / 100,
        min_devices=args.min_devices,
        max_offers_per_minute=args.max_offers_per_minute,
        pace_growth=args.pace_growth,
        max_silence_excess=None if args.max_silence_excess is None else args.max_silence_excess / 100,
    )
    code = _show_tracks(out, [status])
    out.note(f"`otafleet rollout status {args.product} {args.channel} --watch` follows it")
    return code


def rollout_abort(conn: Connection, args: Any, out: Output) -> int:
    return _show_tracks(out, [conn.fleet.abort(args.product, args.channel, _kind(args))])


# --- devices ----------------------------------------------------------------------------------------


def device_assign(conn: Connection, args: Any, out: Output) -> int:
    fleet = conn.fleet
    device = fleet.assign(args.mac, args.product, args.channel, args.pin, unpin=args.unpin)
    out.note(f"{device.mac} → {device.product}/{device.channel}")
    if device.channel not in {c.name for c in fleet.channels(args.product) if c.tracks}:
        out.note(
            f"{device.product}/{device.channel} serves nothing yet: "
            f"`otafleet channel set {device.product} {device.channel} VERSION`"
        )
    out.emit(shapes.device_dict(device), views.device_fields(device))
    return 0


def device_block(conn: Connection, args: Any, out: Output) -> int:
    device = conn.fleet.block(args.mac)
    out.note(f"{device.mac} is blocked: its checks get 403")
    out.emit(shapes.device_dict(device), views.device_fields(device))
    return 0


def device_unblock(conn: Connection, args: Any, out: Output) -> int:
    device = conn.fleet.unblock(args.mac)
    out.note(f"{device.mac} is unblocked")
    out.emit(shapes.device_dict(device), views.device_fields(device))
    return 0


def device_show(conn: Connection, args: Any, out: Output) -> int:
    fleet = conn.fleet
    device = fleet.device(args.mac)
    running = (
        fleet.release(device.product, device.running_version) if device.product and device.running_version else None
    )
    keys = fleet.keys(device.product) if running and device.product else []
    data = shapes.device_dict(device)
    if running is not None:
        data["running_signature"] = {"scheme": running.signature_scheme, "signed_by": list(running.signed_by)}
    out.emit(data, views.device_fields(device, running, keys))
    return 0


def device_credentials(conn: Connection, args: Any, out: Output) -> int:
    fleet = conn.fleet
    device, secret = fleet.issue_credentials(args.mac)
    product = fleet.catalog(device.product).product if device.product and device.assigned else None
    required = bool(product and product.auth_required)
    data = {"mac": device.mac, "user": device.mac, "secret": secret, "auth_required": required}
    out.emit(data, f"{device.mac}  {secret}")
    user = device.mac.replace(":", "")  # RFC 7617 bars colons in a user name (otafleet accepts both)
    out.note(
        "shown once: only its hash is stored. In the sketch: "
        f'httpUpdate.setAuthorization("{user}", "<secret>"). The user name is the MAC the device checks in '
        f"with, {device.mac}: its Wi-Fi station MAC, or, on an ESP32 whose Wi-Fi is off (an Ethernet board), "
        "its base MAC (x-ESP32-BASE-MAC), not the Ethernet interface's own MAC"
    )
    if product is not None and not required:
        out.note(f"product {product.name} does not require auth yet: `otafleet product create {product.name} --auth`")
    return 0


def device_retry(conn: Connection, args: Any, out: Output) -> int:
    device = conn.fleet.retry(args.mac)
    out.note(f"{device.mac}: failed releases and update attempts cleared; it is offered its targets again")
    out.emit(shapes.device_dict(device), views.device_fields(device))
    return 0


def device_delete(conn: Connection, args: Any, out: Output) -> int:
    return _show_deleted(out, conn.fleet.delete_device(args.mac))


def devices(conn: Connection, args: Any, out: Output) -> int:
    where = DeviceFilter(
        version=args.version,
        state=args.state,
        seen_before=_duration("--seen-before", args.seen_before),
        seen_within=_duration("--seen-within", args.seen_within),
    )
    overview = conn.fleet.list_devices(args.product, unassigned=args.unassigned, where=where)
    if out.format == "csv":  # the device rows only; what a person would read beside them goes to stderr
        for warning in shapes.not_a_device_warnings(overview.devices):
            out.note(warning)
    rows = views.device_rows(overview.devices, overview.seen_products)
    out.emit_rows(shapes.overview_dict(overview), views.overview_text(overview), *rows)
    return 0


def _duration(option: str, text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return plans.parse_duration(text)
    except plans.InvalidPlan as bad:
        raise CliError(f"{option}: {bad}") from None


def explain(conn: Connection, args: Any, out: Output) -> int:
    mac = parse_mac(args.mac)
    device = conn.fleet.device(mac)
    decision = conn.service.explain(mac, mode=args.mode)
    if decision is None:  # the device vanished between the two reads
        raise CliError(f"unknown device {mac}")
    out.emit(
        shapes.decision_dict(mac, args.mode, decision, device),
        views.decision_text(mac, args.mode, decision, device),
    )
    return 0


def import_mapping(conn: Connection, args: Any, out: Output) -> int:
    from otafleet_cli import importer

    return importer.run_import(
        Path(args.file),
        product=args.product,
        channel=args.channel,
        dry_run=args.dry_run,
        devices=conn.fleet.devices_store,
        catalog=conn.fleet.catalog_store,
        out=out.stdout,
        as_json=out.as_json,
    )


# The list commands, which alone have a CSV form (`--output csv`); each is named as its command.
CSV_COMMANDS = (products, releases, channels, devices)
CSV_COMMAND_NAMES = ", ".join(c.__name__ for c in CSV_COMMANDS)
