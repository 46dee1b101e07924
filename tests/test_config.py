"""nachtwacht.yaml: defaults, durations, and errors that name the file, line, key and the fix."""

from __future__ import annotations

import re
from datetime import time
from pathlib import Path

import pytest

from nachtwacht.config.loader import ConfigError, load_config, parse_config, resolve_config_path
from nachtwacht.config.schema import ServerSettings
from nachtwacht.durations import format_duration, parse_duration
from nachtwacht.probes.registry import kinds

TCP = "  - name: {name}\n    kind: tcp\n    host: 127.0.0.1\n    port: {port}\n"


def problems(text: str, filename: str = "nw.yaml") -> list[str]:
    """The problem lines a broken config produces (fails the test if it is accepted)."""
    with pytest.raises(ConfigError) as info:
        parse_config(text, filename)
    return [str(p) for p in info.value.problems]


# --- defaults ---------------------------------------------------------------------------------


def test_file_with_only_probes_is_valid_and_everything_else_has_defaults(tmp_path: Path) -> None:
    path = tmp_path / "nachtwacht.yaml"
    path.write_text("probes:\n" + TCP.format(name="web", port=80), encoding="utf-8")

    cfg = load_config(path)

    assert cfg.site == "nachtwacht"
    assert cfg.timezone == "Europe/Amsterdam"
    assert cfg.business_hours.days == ["mon", "tue", "wed", "thu", "fri"]
    assert (cfg.business_hours.start.hour, cfg.business_hours.end.hour) == (9, 17)
    assert cfg.business_hours.holidays == []
    assert cfg.store.url == f"sqlite:///{tmp_path.resolve().as_posix()}/data/nachtwacht.db"
    assert (cfg.server.host, cfg.server.port) == ("127.0.0.1", 8080)
    assert cfg.engine.max_concurrency == 1000
    assert (cfg.engine.flush_interval, cfg.engine.startup_spread) == (1.0, 25.0)
    assert (cfg.retention.raw, cfg.retention.minute) == (2 * 86400, 14 * 86400)
    assert (cfg.retention.hour, cfg.retention.state_changes) == (400 * 86400, 400 * 86400)
    assert cfg.components == []
    [probe] = cfg.probes
    assert (probe.name, probe.kind, probe.port) == ("web", "tcp", 80)
    assert (probe.interval, probe.timeout, probe.retries) == (60.0, 10.0, 1)
    assert probe.retry_interval is None and probe.effective_retry_interval == 60.0
    assert (probe.component, probe.severity, probe.enabled) == ("default", 2, True)
    assert probe.depends_on == []
    assert cfg.component_names() == ["default"]


def test_empty_file_and_empty_sections_are_valid() -> None:
    assert parse_config("", "nw.yaml").probes == []
    cfg = parse_config("probes:\ncomponents:\nbusiness_hours:\n", "nw.yaml")
    assert cfg.probes == [] and cfg.components == []
    assert cfg.business_hours.days[0] == "mon"


def test_components_may_be_a_mapping_of_name_to_description() -> None:
    cfg = parse_config(
        "components:\n  db: MariaDB\n  web:\nprobes:\n"
        + TCP.format(name="x", port=1)
        + "    component: cache\n",
        "nw.yaml",
    )
    assert [(c.name, c.description) for c in cfg.components] == [("db", "MariaDB"), ("web", "")]
    assert cfg.component_names() == ["db", "web", "cache"]


# --- durations --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("5m", 300),
        ("1h", 3600),
        ("1d", 86400),
        ("1h30m", 5400),
        ("2w", 14 * 86400),
        ("250ms", 0.25),
        ("1.5h", 5400),
        (" 5m ", 300),
        (45, 45),
        ("90", 90),
    ],
)
def test_durations_parse(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["5x", "m5", "", "5 minutes", "-5s", "1h-30m", "1.2.3s", "h"])
def test_bad_durations_are_refused_with_the_units_allowed(text: str) -> None:
    with pytest.raises(ValueError, match="ms, s, m, h, d or w|negative"):
        parse_duration(text)


@pytest.mark.parametrize("value", [True, None, [5], -1])
def test_non_duration_values_are_refused(value: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


def test_durations_format_back_to_the_short_form() -> None:
    assert [format_duration(s) for s in (5400, 30, 86400 + 60, 0.25, 0)] == [
        "1h30m",
        "30s",
        "1d1m",
        "250ms",
        "0s",
    ]


def test_durations_in_the_config_become_seconds() -> None:
    cfg = parse_config(
        "engine:\n  flush_interval: 500ms\nretention:\n  raw: 1d\nprobes:\n"
        + TCP.format(name="a", port=1)
        + "    interval: 1h30m\n    timeout: 5s\n    retry_interval: 30s\n",
        "nw.yaml",
    )
    assert cfg.engine.flush_interval == 0.5
    assert cfg.retention.raw == 86400
    assert (cfg.probes[0].interval, cfg.probes[0].timeout) == (5400, 5)
    assert cfg.probes[0].effective_retry_interval == 30


def test_bad_duration_in_the_config_names_file_line_and_key() -> None:
    text = "probes:\n" + TCP.format(name="a", port=1) + "    interval: 5x\n"
    assert problems(text) == [
        "nw.yaml:6: probes[0].interval: '5x' is not a duration; use a number with a unit: "
        "ms, s, m, h, d or w (e.g. 30s, 5m, 1h30m)"
    ]


# --- errors: file:line: key: message ---------------------------------------------------------


def test_typo_in_a_probe_key_names_the_line_and_suggests_the_right_key() -> None:
    text = "site: shop\nprobes:\n" + TCP.format(name="a", port=1) + "    timeoutt: 5s\n"
    [line] = problems(text, "/etc/nachtwacht.yaml")
    assert line.startswith("/etc/nachtwacht.yaml:7: probes[0].timeoutt: unknown key; allowed here:")
    assert line.endswith("did you mean 'timeout'?")
    assert "host, interval" in line  # the allowed keys of the tcp kind are listed


def test_typo_in_a_top_level_and_a_nested_key() -> None:
    # server: grows settings (timeouts, limits); every one of them is listed, sorted
    server_keys = ", ".join(sorted(ServerSettings.model_fields))
    assert problems("sit: shop\nserver:\n  prot: 80\n") == [
        "nw.yaml:1: sit: unknown key; allowed here: analytics, auth, backup, business_hours, "
        "components, drills, engine, errors, evidence, incidents, maintenance, notify, people, "
        "probes, retention, reviews, runbooks, security, server, site, spool, status_page, "
        "store, timezone, watchdog; "
        "did you mean 'site'?",
        f"nw.yaml:3: server.prot: unknown key; allowed here: {server_keys}; did you mean 'port'?",
    ]


def test_unknown_kind_lists_every_allowed_kind() -> None:
    [line] = problems("probes:\n  - name: a\n    kind: tpc\n    host: x\n")
    allowed = ", ".join(sorted(kinds()))
    assert line == (
        f"nw.yaml:3: probes[0].kind: unknown kind 'tpc'; allowed kinds: {allowed}; "
        "did you mean 'tcp'?"
    )


def test_missing_kind_lists_the_kinds() -> None:
    [line] = problems("probes:\n  - name: a\n    host: x\n")
    assert line.startswith("nw.yaml:2: probes[0].kind: is required; one of: command, heartbeat")


def test_wrong_type_names_the_key_and_its_line() -> None:
    text = "probes:\n" + TCP.format(name="a", port="eighty")
    [line] = problems(text)
    assert line.startswith("nw.yaml:5: probes[0].port: ")
    assert "integer" in line


def test_missing_required_key_points_at_its_probe() -> None:
    assert problems("probes:\n  - name: a\n    kind: tcp\n    host: x\n") == [
        "nw.yaml:2: probes[0].port: is required"
    ]


def test_out_of_range_severity_says_what_is_allowed() -> None:
    text = "probes:\n" + TCP.format(name="a", port=1) + "    severity: 4\n"
    assert problems(text) == ["nw.yaml:6: probes[0].severity: Input should be 1, 2 or 3"]


def test_a_rule_checked_across_keys_points_at_the_key_it_names() -> None:
    text = "probes:\n" + TCP.format(name="a", port=1) + "    interval: 0.5\n"
    assert problems(text) == ["nw.yaml:6: probes[0].interval: must be at least 1s"]
    text = "business_hours:\n  start: '18:00'\n  end: '09:00'\n"
    assert problems(text) == ["nw.yaml:3: business_hours.end: must be after start (18:00)"]


def test_unquoted_greater_than_operator_gets_a_quoting_hint() -> None:
    text = "probes:\n  - name: a\n    kind: host\n    metric: cpu\n    op: >\n    critical: 3\n"
    [line] = problems(text)
    assert line.startswith("nw.yaml:5: probes[0].op: Input should be '>', '>=', '<' or '<='")
    assert line.endswith(
        'quote it (op: ">"): unquoted, YAML reads > and | as the start of a text block'
    )
    op = parse_config(text.replace("op: >", 'op: ">"'), "nw.yaml").probes[0].op
    assert op == ">"


def test_bad_timezone_is_refused_with_an_example() -> None:
    assert problems("timezone: Europe/Amsterdamm\n") == [
        "nw.yaml:1: timezone: unknown timezone 'Europe/Amsterdamm'; "
        "use an IANA name such as Europe/Amsterdam"
    ]


def test_unknown_store_scheme_is_refused() -> None:
    [line] = problems("store:\n  url: mongodb://db/nachtwacht\n")
    assert line.startswith("nw.yaml:2: store.url: store url must start with sqlite:///")


def test_duplicate_probe_names_point_at_the_second_one() -> None:
    text = "probes:\n" + TCP.format(name="web", port=1) + TCP.format(name="web", port=2)
    assert problems(text) == ["nw.yaml:6: probes[1].name: 'web' is already used by probes[0]"]


def test_depends_on_an_unknown_probe_or_itself() -> None:
    text = (
        "probes:\n"
        + TCP.format(name="db", port=1)
        + TCP.format(name="web", port=2)
        + "    depends_on: [dbb, web]\n"
    )
    assert problems(text) == [
        "nw.yaml:10: probes[1].depends_on: no probe is named 'dbb'",
        "nw.yaml:10: probes[1].depends_on: a probe cannot depend on itself",
    ]


def test_shared_heartbeat_token_is_reported_with_the_other_mistakes() -> None:
    beat = "  - name: {name}\n    kind: heartbeat\n    token: abcdefgh12\n    period: 1d\n"
    text = (
        "probes:\n"
        + beat.format(name="backup")
        + beat.format(name="backup")
        + "    depends_on: [nothing]\n"
    )
    assert problems(text) == [
        "nw.yaml:6: probes[1].name: 'backup' is already used by probes[0]",
        "nw.yaml:8: probes[1].token: already used by probes[0]; each heartbeat needs its own token",
        "nw.yaml:10: probes[1].depends_on: no probe is named 'nothing'",
    ]


def test_depends_on_a_known_probe_is_accepted() -> None:
    text = (
        "probes:\n"
        + TCP.format(name="db", port=1)
        + TCP.format(name="web", port=2)
        + "    depends_on: [db]\n"
    )
    assert parse_config(text, "nw.yaml").probes[1].depends_on == ["db"]


def test_every_mistake_is_reported_at_once_in_file_order() -> None:
    text = (
        "timezone: Nowhere/City\n"
        "probes:\n"
        + TCP.format(name="a", port=1)
        + "    retries: many\n"
        + TCP.format(name="b", port=2)
        + "    timout: 5s\n"
    )
    lines = problems(text)
    assert [line.split(": ", 2)[:2] for line in lines] == [
        ["nw.yaml:1", "timezone"],
        ["nw.yaml:7", "probes[0].retries"],
        ["nw.yaml:12", "probes[1].timout"],
    ]


def test_a_key_written_twice_is_an_error_not_a_silent_override() -> None:
    text = "probes:\n" + TCP.format(name="a", port=1) + "    port: 2\n"
    assert problems(text) == ["nw.yaml:6: probes[0].port: duplicate key; already set on line 5"]


def test_invalid_yaml_gives_file_and_line() -> None:
    [line] = problems("site: shop\nprobes:\n  - name: a\n   kind: tcp\n", "conf/nw.yaml")
    assert line.startswith("conf/nw.yaml:4: invalid YAML: ")


def test_a_file_that_is_not_a_mapping_is_refused() -> None:
    assert problems("- name: a\n") == [
        "nw.yaml:1: the file must be a mapping of keys such as probes:"
    ]


def test_missing_file_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "none.yaml")
    assert str(info.value) == f"{tmp_path / 'none.yaml'}: no such file; create one with " + (
        "`nachtwacht init`"
    )


# --- where the config and the store live ----------------------------------------------------


def test_relative_sqlite_path_is_relative_to_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf_dir = tmp_path / "etc" / "nachtwacht"
    conf_dir.mkdir(parents=True)
    path = conf_dir / "nachtwacht.yaml"
    path.write_text("store:\n  url: sqlite:///state/nw.db\n", encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    cfg = load_config(path)

    assert cfg.store.url == f"sqlite:///{conf_dir.resolve().as_posix()}/state/nw.db"
    assert not (conf_dir / "state").exists()  # loading creates nothing


def test_relative_config_path_resolves_sqlite_against_its_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "nw.yaml").write_text("probes:\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert load_config("sub/nw.yaml").store.url == (
        f"sqlite:///{(tmp_path / 'sub').resolve().as_posix()}/data/nachtwacht.db"
    )


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:////var/lib/nachtwacht/nw.db",
        "sqlite:///:memory:",
        "postgresql+psycopg://nw:secret@db/nachtwacht",
        "mysql+pymysql://nw@127.0.0.1:3306/nachtwacht",
    ],
)
def test_absolute_and_server_urls_are_kept_as_written(tmp_path: Path, url: str) -> None:
    path = tmp_path / "nw.yaml"
    path.write_text(f"store:\n  url: '{url}'\n", encoding="utf-8")
    assert load_config(path).store.url == url


def test_config_path_comes_from_option_then_environment_then_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NACHTWACHT_CONFIG", raising=False)
    assert resolve_config_path() == Path("nachtwacht.yaml")
    monkeypatch.setenv("NACHTWACHT_CONFIG", "/etc/nachtwacht/main.yaml")
    assert resolve_config_path() == Path("/etc/nachtwacht/main.yaml")
    assert resolve_config_path("given.yaml") == Path("given.yaml")


# --- the documentation's examples ------------------------------------------------------------

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _yaml_blocks(name: str) -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", (DOCS / name).read_text(encoding="utf-8"), re.S)


def test_every_probe_example_in_probes_md_is_valid() -> None:
    blocks = _yaml_blocks("probes.md")
    assert len(blocks) >= 9  # one per kind at least
    for block in blocks:
        text = "probes:\n" + "".join(f"  {line}\n" for line in block.splitlines())
        if "depends_on: [database]" in text:
            text += "  - name: database\n    kind: sql\n    url: sqlite:////tmp/x.db\n"
        parse_config(text, "probes.md")


def test_every_example_in_configuration_md_is_valid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # what the example of secrets from the environment and files reads
    monkeypatch.setenv("NW_DB_PASSWORD", "example")
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "smtp").write_text("example\n")
    (tmp_path / "secrets" / "erp-token").write_text("example\n")
    blocks = _yaml_blocks("configuration.md")
    assert len(blocks) >= 4
    for block in blocks:
        parse_config(block, str(tmp_path / "configuration.md"))


def test_a_relative_sqlite_path_in_a_sql_probe_is_relative_to_the_config_file(
    tmp_path: Path,
) -> None:
    from nachtwacht.config.loader import load_config

    cfg = tmp_path / "conf" / "nachtwacht.yaml"
    cfg.parent.mkdir()
    cfg.write_text(
        "probes:\n  - {name: app-db, kind: sql, url: 'sqlite:///data/app.db'}\n"
        "  - {name: mem, kind: sql, url: 'sqlite:///:memory:'}\n",
        encoding="utf-8",
    )
    settings = load_config(cfg)
    assert settings.probes[0].url == f"sqlite:///{(cfg.parent / 'data' / 'app.db').as_posix()}"
    assert settings.probes[1].url == "sqlite:///:memory:"
    assert settings.store.url == f"sqlite:///{(cfg.parent / 'data' / 'nachtwacht.db').as_posix()}"


def test_backup_heartbeat_must_name_a_heartbeat_probe() -> None:
    found = problems("backup:\n  interval: 1d\n  heartbeat: no-such-token-123\n")
    assert found == [
        "nw.yaml:3: backup.heartbeat: no heartbeat probe has this token; add one so a backup "
        "that stops running raises an alert"
    ]


def test_frappe_sources_need_distinct_names() -> None:
    text = (
        "errors:\n  frappe_monitor_logs:\n"
        "    - {name: shop, path: /a/monitor.json.log}\n"
        "    - {name: shop, path: /b/monitor.json.log}\n"
    )
    assert problems(text) == [
        "nw.yaml:4: errors.frappe_monitor_logs[1].name: 'shop' is already used"
    ]


# --- YAML 1.1 traps: unquoted times and yes/no/on/off -----------------------------------------


def test_unquoted_business_hours_are_times_of_day() -> None:
    # YAML 1.1 reads 17:00 as the base-60 number 1020 (and 08:30 as text)
    settings = parse_config("business_hours:\n  start: 08:30\n  end: 17:00\n")
    assert (settings.business_hours.start, settings.business_hours.end) == (time(8, 30), time(17))
    settings = parse_config("business_hours:\n  start: 7:45\n  end: 22:15\n")
    assert (settings.business_hours.start, settings.business_hours.end) == (
        time(7, 45),
        time(22, 15),
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("1020", "business_hours.end: must be a time of day such as 17:00"),
        ("'17:00+02:00'", "business_hours.end: must be a time of day without a zone"),
        ("25:00", "business_hours.end: Input should be in a valid time format"),
    ],
)
def test_a_business_hour_that_is_no_time_of_day_names_file_and_line(
    value: str, message: str
) -> None:
    [problem] = problems(f"site: x\nbusiness_hours:\n  end: {value}\n")
    assert problem.startswith(f"nw.yaml:3: {message}")


def test_an_unquoted_daily_handoff_is_the_time_written() -> None:
    settings = parse_config(
        "people:\n  contacts:\n    - {id: ann, name: Ann}\n"
        "  rotations:\n    - {name: night, type: daily, handoff: 17:00, members: [ann]}\n"
    )
    assert settings.people.rotations[0].handoff == "17:00"


def test_yes_no_on_off_are_text_where_text_is_meant() -> None:
    settings = parse_config(
        "people:\n  contacts:\n    - {id: no, name: Norway, email: oslo@example.org}\n"
        "notify:\n  channels:\n    on: {kind: slack, url: 'https://chat.example/hook'}\n"
        "components:\n  yes: The yes-service\n"
        "probes:\n  - {name: off, kind: tcp, host: 127.0.0.1, port: 80, component: yes}\n"
    )
    assert settings.people.contacts[0].id == "no"
    assert list(settings.notify.channels) == ["on"]
    assert [c.name for c in settings.components] == ["yes"]
    assert (settings.probes[0].name, settings.probes[0].component) == ("off", "yes")


def test_yes_no_on_off_still_switch_booleans_and_numbers_stay_numbers() -> None:
    settings = parse_config(
        "server:\n  secure_cookies: yes\n  port: 8443\nengine:\n  flush_interval: 0.5\n"
        "notify:\n  channels:\n    m: {kind: email, starttls: off, ssl: on, port: 465}\n"
    )
    assert settings.server.secure_cookies is True and settings.server.port == 8443
    assert settings.engine.flush_interval == 0.5
    mail = settings.notify.channels["m"]
    assert (mail.starttls, mail.ssl, mail.port) == (False, True, 465)


# --- notify channels get the same help as every other key -------------------------------------


def test_a_typo_in_a_channel_key_suggests_the_right_key() -> None:
    found = problems(
        "notify:\n  channels:\n    chat:\n      kind: slack\n      urll: https://x.example/h\n"
    )
    assert (
        "nw.yaml:5: notify.channels.chat.urll: unknown key; allowed here: kind, team_wide, "
        "timeout, url; did you mean 'url'?" in found
    )
    [typo] = problems("notify:\n  channels:\n    m:\n      kind: email\n      hots: x\n")
    assert typo.startswith("nw.yaml:5: notify.channels.m.hots: unknown key; allowed here: host,")
    assert typo.endswith("did you mean 'host'?")


def test_a_wrong_or_missing_channel_kind_lists_the_channel_kinds_not_the_probe_kinds() -> None:
    [wrong] = problems("notify:\n  channels:\n    m:\n      kind: emal\n")
    assert wrong == (
        "nw.yaml:4: notify.channels.m.kind: unknown kind 'emal'; allowed kinds: email, "
        "mattermost, slack, sms, teams, webhook; did you mean 'email'?"
    )
    [missing] = problems("notify:\n  channels:\n    m:\n      host: x\n")
    assert missing == (
        "nw.yaml:3: notify.channels.m.kind: is required; one of: email, mattermost, slack, sms, "
        "teams, webhook"
    )


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("  contacts:\n    - {id: a, name: A, phone: +31612345678}", "people.contacts[0].phone"),
        ("  contacts:\n    - {id: a, name: 2026-01-01}", "people.contacts[0].name"),
        ("  contacts:\n    - {id: a, name: true}", "people.contacts[0].name"),
    ],
)
def test_a_number_or_date_where_text_is_meant_says_to_quote_it(line: str, key: str) -> None:
    [problem] = problems(f"people:\n{line}\n")
    assert problem == (
        f"nw.yaml:3: {key}: Input should be a valid string; put it in quotes: unquoted, YAML "
        "reads it as a number, a date or a boolean"
    )
