"""The route step's data: routing tables, the demo host table, offline IP-to-country, follow-up templates."""

from __future__ import annotations

import csv
import ipaddress
import shutil
from pathlib import Path

import iptocc
import pytest

from pipeline.errors import ConfigError
from pipeline.route import logic
from pipeline.route.resolve import FixedResolver, SocketResolver, country_of, demo_resolver, locate
from pipeline.route.tables import DATA_DIR, DEMO_HOSTS_FILE, load_tables
from pipeline.route.templates import MESSAGES_FILE, check_templates, load_templates
from pipeline.settings import Settings
from tests.unit.route_builders import NOW, assessed

# shared/ sits beside the checkout (as it does beside CI's clone).
SHARED = Path(__file__).resolve().parents[3] / "shared" / "domain"


def _demo_rows() -> list[dict[str, str]]:
    with (DATA_DIR / DEMO_HOSTS_FILE).open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("row", _demo_rows(), ids=lambda r: r["host"])
def test_demo_host_addresses_are_in_their_stated_country(row: dict[str, str]) -> None:
    """Every demo host's address is delegated to the country the table states, according to iptocc."""
    assert iptocc.country_code(row["ip"]) == row["country"]
    assert country_of(row["ip"]) == row["country"]


def test_demo_hosts_cover_the_countries_the_tests_need() -> None:
    """The demo table has GB, NL, DE, CA, US, FR, several countries without a hotline, and IPv6 hosts."""
    rows = _demo_rows()
    countries = {r["country"] for r in rows}
    tables = load_tables()
    assert {"GB", "NL", "DE", "CA", "US", "FR"} <= countries
    without = {c for c in countries if not tables.has_hotline(c)}
    assert len(without) >= 3, without
    assert all((r["inhope_hotline"] == "yes") == tables.has_hotline(r["country"]) for r in rows)
    assert any(":" in r["ip"] for r in rows)


def test_packaged_tables_match_the_shared_domain_tables() -> None:
    """The packaged tables hold every row of shared/domain with its verified flag, and the NCECC default."""
    if not SHARED.is_dir():
        pytest.skip("shared/domain is not present in this checkout")
    tables = load_tables()
    with (SHARED / "hotlines.csv").open(newline="", encoding="utf-8") as fh:
        hotlines = {r["country"]: (r["hotline"], r["verified"] == "yes") for r in csv.DictReader(fh)}
    assert {c: (a.name, a.verified) for c, a in tables.hotlines.items()} == hotlines
    with (SHARED / "jurisdictions.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    provinces = {
        r["code"]: (r["police_of_jurisdiction"], r["police_verified"] == "yes") for r in rows if r["code"]
    }
    assert {c: (p.police.name, p.police.verified) for c, p in tables.provinces.items()} == provinces
    assert tables.national_default.name == "RCMP National Child Exploitation Crime Centre (NCECC)"
    assert tables.provinces["NU"].child_protection is not None
    assert tables.provinces["NU"].child_protection.verified is True


def test_operator_folder_replaces_one_table_and_keeps_the_others(tmp_path: Path) -> None:
    """A folder holding only hotlines.csv replaces that table; the others come from the packaged data."""
    (tmp_path / "hotlines.csv").write_text(
        "country,hotline,verified,source\nRU,Test Hotline,no,operator 2026-12\n"
    )
    tables = load_tables(tmp_path)
    assert set(tables.hotlines) == {"RU"}
    assert tables.hotlines["RU"].source == "operator 2026-12"
    assert "ON" in tables.provinces
    # The replaced table changes routing without code: Russia now has a hotline.
    event = assessed(urls=("http://cdn1.ru-host.example/x",))
    located = {t: locate(t, demo_resolver()) for t in logic.targets(event)}
    keys = [logic.emit_key(e) for e in logic.decide(event, tables, located, NOW)]
    assert keys == ["inhope_hotline:RU", "close"]


def test_settings_read_the_tables_folder_from_the_environment(tmp_path: Path) -> None:
    """TIPLINE_ROUTE_TABLES is read once into Settings.route_tables."""
    assert Settings.from_env({"TIPLINE_ROUTE_TABLES": str(tmp_path)}).route_tables == tmp_path
    assert Settings.from_env({}).route_tables is None


@pytest.mark.parametrize(
    ("file_name", "content", "message"),
    [
        ("hotlines.csv", "country,hotline,verified\nNLD,Offlimits,no\n", "line 2: country='NLD'"),
        ("hotlines.csv", "country,hotline,verified\nNL,Offlimits,maybe\n", "line 2: verified='maybe'"),
        ("hotlines.csv", "country,hotline\nNL,Offlimits\n", "missing column(s) verified"),
        (
            "hotlines.csv",
            "country,hotline,verified\nNL,Offlimits,no\nNL,Other,no\n",
            "line 3: country NL appears twice",
        ),
        (
            "jurisdictions.csv",
            "code,name,police_of_jurisdiction,police_verified,child_protection_authority,child_protection_verified\n"
            "ON,Ontario,OPP,no,CAS,no\n",
            "no national default row",
        ),
        ("international.csv", "key,name,verified\nother,X,no\n", "no row with key 'interpol'"),
    ],
)
def test_a_bad_table_is_refused_with_one_sentence(
    tmp_path: Path, file_name: str, content: str, message: str
) -> None:
    """A replacement table with a wrong code, flag, column or row is refused, naming the file and line."""
    (tmp_path / file_name).write_text(content)
    with pytest.raises(ConfigError, match=None) as err:
        load_tables(tmp_path)
    assert message in str(err.value)
    assert file_name in str(err.value)


def test_a_missing_folder_is_refused(tmp_path: Path) -> None:
    """A tables folder that does not exist is refused before anything runs."""
    with pytest.raises(ConfigError, match="is not a folder"):
        load_tables(tmp_path / "nope")


@pytest.mark.parametrize(
    ("target", "country", "problem"),
    [
        ("cdn1.gb-host.example", "GB", None),
        ("CDN1.NL-HOST.EXAMPLE.", "NL", None),
        ("v6.ca-host.example", "CA", None),
        ("2001:410::1", "CA", None),
        ("[2a02:6b8::2:242]", "RU", None),
        ("::ffff:8.8.8.8", "US", None),
        ("192.168.1.10", None, "is an address that maps to no country"),
        ("2001:db8::1", None, "is an address that maps to no country"),
        ("[::1", None, "is not a readable host name"),
        ("bad host", None, "is not a readable host name"),
        ("", None, "is not a readable host name"),
        ("unknown.example", None, "does not resolve"),
    ],
)
def test_locate(target: str, country: str | None, problem: str | None) -> None:
    """Hosts resolve through the fixed table, IP literals (v4, v6, bracketed, mapped) are placed directly."""
    found = locate(target, demo_resolver())
    assert (found.country, found.problem) == (country, problem)


def test_a_host_resolving_only_to_private_addresses_has_no_country() -> None:
    """A host whose addresses are all private is reported as such, not as hosted somewhere."""
    found = locate("intranet.example", FixedResolver({"intranet.example": ["10.0.0.5", "fd00::5"]}))
    assert (found.country, found.address, found.problem) == (
        None,
        "10.0.0.5",
        "resolves to no country's address",
    )


def test_a_host_uses_its_first_address_with_a_country() -> None:
    """Of several addresses, the first one delegated to a country decides."""
    found = locate("mixed.example", FixedResolver({"mixed.example": ["10.0.0.5", "193.0.6.139", "8.8.8.8"]}))
    assert (found.country, found.address) == ("NL", "193.0.6.139")


def test_bad_demo_host_file_is_refused(tmp_path: Path) -> None:
    """A host table row without a valid address is refused with its line."""
    path = tmp_path / "hosts.csv"
    path.write_text("host,ip\na.example,not-an-ip\n")
    with pytest.raises(ConfigError, match="line 2"):
        FixedResolver.from_csv(path)


def test_every_template_the_rules_name_exists_in_both_languages() -> None:
    """Each follow-up template id the rules can name is shipped, in English and in French."""
    templates = load_templates()
    assert set(logic.template_ids()) <= set(templates)
    assert {t.language for t in templates.values()} == {"en", "fr"}
    check_templates()


def test_templates_render_the_report_number_and_no_contact() -> None:
    """A template renders with the report number only: there is no place for a contact detail."""
    subject, body = load_templates()["not_illegal.fr"].render(report_number="CT-1")
    assert subject == "Votre signalement CT-1"
    assert "{" not in body


def test_a_template_with_an_unknown_placeholder_is_refused(tmp_path: Path) -> None:
    """A template that asks for any field but the report number (an e-mail, say) is refused."""
    path = tmp_path / "followup.csv"
    shutil.copy(MESSAGES_FILE, path)
    with path.open("a", encoding="utf-8") as fh:
        fh.write('extra.en,informational,en,Hi {email},"body"\n')
    with pytest.raises(ConfigError, match="unknown placeholder"):
        load_templates(path)


def test_system_resolver_answers_localhost_from_the_hosts_file() -> None:
    """The system resolver (no network for localhost) finds loopback addresses, which map to no country."""
    resolver = SocketResolver(budget_s=2.0)
    try:
        addresses = resolver.addresses("localhost")
        found = locate("localhost", resolver)
    finally:
        resolver.close()
    assert addresses
    assert all(ipaddress.ip_address(a).is_loopback for a in addresses)
    assert (found.country, found.problem) == (None, "resolves to no country's address")


def test_system_resolver_caches_answers_and_asks_once_per_name() -> None:
    """The same name asked twice in one report, and again later, is looked up once and answered alike."""
    resolver = SocketResolver(budget_s=2.0)
    try:
        first = resolver.addresses_many(["localhost", "LOCALHOST."])
        again = resolver.addresses("localhost")
    finally:
        resolver.close()
    assert first["localhost"] == first["LOCALHOST."] == again
    assert len(resolver._cache) == 1
