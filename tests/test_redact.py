"""nachtwacht.config.redact on its own: URLs, command lines, free text with many known secrets."""

from __future__ import annotations

import pytest

from nachtwacht.config.masking import mask_capability_url, mask_command, mask_url
from nachtwacht.config.redactor import Redactor

M = "••••••"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        # SQLAlchemy reads the password up to the first @, slashes and all
        ("postgresql+psycopg://nw:pa/ss@db:5432/app", f"postgresql+psycopg://nw:{M}@db:5432/app"),
        ("mysql+pymysql://app:a?b#c@db/shop", f"mysql+pymysql://app:{M}@db/shop"),
        ("redis://:s3cret@cache:6379/0", f"redis://:{M}@cache:6379/0"),
        ("https://u:p4ss@h.example/x?token=zz9&a=1", f"https://u:{M}@h.example/x?token={M}&a={M}"),
        # http is read by the RFC: an @ in the query is no userinfo
        ("https://h.example:8443/p?mail=a@b.example", f"https://h.example:8443/p?mail={M}"),
        ("https://h.example/cb#access_token=x", f"https://h.example/cb#{M}"),
        ("https://h.example/?", "https://h.example/?"),
        ("sqlite:////var/lib/nw.db", "sqlite:////var/lib/nw.db"),
        ("not a url", "not a url"),
    ],
)
def test_a_url_keeps_where_it_points_and_loses_its_secrets(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_a_capability_url_keeps_only_its_scheme_and_host() -> None:
    assert mask_capability_url("https://hooks.slack.com/services/T/B/x") == (
        f"https://hooks.slack.com/{M}"
    )
    assert mask_capability_url("https://u:pw@hc-ping.com:8443/uuid?x=1") == (
        f"https://hc-ping.com:8443/{M}"
    )
    assert mask_capability_url("https://example.org/") == "https://example.org/"


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        ("mysql --password=hunter2 -e 'select 1'", f"mysql --password={M} -e 'select 1'"),
        ('mysql --password="a b c" ping', f'mysql --password="{M}" ping'),
        ("mysqladmin -u root -psecret ping", f"mysqladmin -u root -p{M} ping"),
        ("mysql -p hunter2 shop", f"mysql -p {M} shop"),
        ("tool --api-token abc123 --verbose", f"tool --api-token {M} --verbose"),
        ("PGPASSWORD=x9 psql -h db", f"PGPASSWORD={M} psql -h db"),
        (
            "curl -u mon:pw -H 'X-Key: k1' -H 'Accept: text/plain' https://h/?sig=s",
            f"curl -u mon:{M} -H 'X-Key: {M}' -H 'Accept: text/plain' https://h/?sig={M}",
        ),
        ("check_disk -w 10% -c 5% /", "check_disk -w 10% -c 5% /"),
    ],
)
def test_a_command_line_loses_the_values_of_secret_options(command: str, shown: str) -> None:
    assert mask_command(command) == shown


def test_a_command_given_as_words_is_masked_word_by_word() -> None:
    words = ["mysqladmin", "--password", "hunter2", "-H", "X-Auth: a1", "ping"]
    assert mask_command(words) == ["mysqladmin", "--password", M, "-H", f"X-Auth: {M}", "ping"]


def test_the_redactor_finds_thousands_of_known_secrets_in_one_pass() -> None:
    known = [f"probe-{i:05d}-secret" for i in range(5000)] + ["tiny"]
    redactor = Redactor(known)
    text = "start probe-04711-secret middle tiny end probe-00000-secret" * 2
    assert redactor.text(text) == f"start {M} middle {M} end {M}" * 2


def test_a_secret_inside_another_is_masked_as_one() -> None:
    redactor = Redactor(["abcdefghij", "defghijklm"])
    assert redactor.text("xx abcdefghijklm yy") == f"xx {M} yy"
