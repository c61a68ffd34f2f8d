# tests/python/test_config.py - configuration sources: dict, YAML file, URL, default, KEEL_ environment, secrets.
import os

import pytest

import keel
from conftest import PG_URL, pg_parts


@pytest.fixture
def clean_env(monkeypatch):
    """Removes KEEL_ configuration variables so each test sets exactly what it means to."""
    for name in list(os.environ):
        if name.startswith("KEEL_") and not name.startswith("KEEL_TEST_"):
            monkeypatch.delenv(name)
    return monkeypatch


async def test_config_from_dict_with_two_engines(tmp_path, clean_env):
    local = tmp_path / "local.db"
    d = keel.Database({"default": "main", "databases": {
        "main": {"url": PG_URL, "pool": {"min_size": 1, "max_size": 3, "acquire_timeout": 2.5}},
        "local": {"url": "sqlite:///" + str(local), "pool": {"max_size": 2}}}})
    try:
        assert d.databases == ["main", "local"]
        assert d.default_database == "main"
        assert d.engine() == "postgresql"
        assert d.engine("main") == "postgresql"
        assert d.engine("local") == "sqlite"
        await d.start()
        main = d.pool_stats("main")
        assert (main["min_size"], main["max_size"]) == (1, 3)
        assert main["acquire_timeout"] == pytest.approx(2.5)
        assert d.pool_stats("local")["max_size"] == 2
        assert d.pool_stats() == d.pool_stats("main")
        assert await d.fetchval("SELECT current_database()") == pg_parts()["database"]
        assert isinstance(await d.fetchval("SELECT sqlite_version()", database="local"), str)
        await d.execute("CREATE TABLE marker (a INTEGER)", database="local")
        assert local.exists()
        async with d.connection("local") as conn:
            assert conn.engine == "sqlite" and conn.database == "local"
        async with d.transaction(database="local") as conn:
            await conn.execute("INSERT INTO marker VALUES (1)")
        assert await d.fetchval("SELECT count(*) FROM marker", database="local") == 1
    finally:
        await d.close()


async def test_config_values_are_stringified(tmp_path, clean_env):
    # Numbers in a dict are accepted as their text.
    d = keel.Database({"databases": {"main": {
        "url": "sqlite:///" + str(tmp_path / "s.db"),
        "pool": {"min_size": 0, "max_size": 4, "acquire_timeout": 1}}}})
    async with d:
        stats = d.pool_stats()
        assert (stats["min_size"], stats["max_size"]) == (0, 4)
        assert stats["acquire_timeout"] == pytest.approx(1.0)
        assert await d.fetchval("SELECT 1") == 1


YAML = """\
# keel configuration written by the test suite
default: main
databases:
  main:
    url: "{main}"
    pool:
      min_size: 1
      max_size: 4
      acquire_timeout: 3.5
  local:
    url: "{local}"
"""


def write_yaml(tmp_path, main, local):
    path = tmp_path / "keel.yaml"
    path.write_text(YAML.format(main=main, local=local), encoding="utf-8")
    return path


@pytest.mark.parametrize("as_path", [False, True], ids=["str", "pathlike"])
async def test_config_from_yaml_file(tmp_path, clean_env, as_path):
    path = write_yaml(tmp_path, PG_URL, "sqlite:///" + str(tmp_path / "local.db"))
    d = keel.Database(path if as_path else str(path))
    async with d:
        assert d.databases == ["main", "local"]
        assert d.default_database == "main"
        assert d.engine() == "postgresql" and d.engine("local") == "sqlite"
        stats = d.pool_stats()
        assert stats["max_size"] == 4 and stats["acquire_timeout"] == pytest.approx(3.5)
        assert await d.fetchval("SELECT current_database()") == pg_parts()["database"]
        assert await d.fetchval("SELECT 40 + 2", database="local") == 42


async def test_malformed_yaml_file(tmp_path, clean_env):
    path = tmp_path / "bad.yaml"
    path.write_text("databases:\n  main:\n    url: [unclosed\n  - nonsense\n", encoding="utf-8")
    with pytest.raises(keel.ConfigError):
        keel.Database(str(path))


async def test_missing_yaml_file_names_the_path(tmp_path, clean_env):
    path = tmp_path / "does-not-exist.yaml"
    with pytest.raises(keel.Error) as ei:
        keel.Database(str(path))
    assert "does-not-exist.yaml" in str(ei.value)


async def test_config_from_url(db_url, engine, clean_env):
    d = keel.Database(db_url)
    async with d:
        assert d.databases == ["default"]
        assert d.default_database == "default"
        assert d.engine() == engine
        assert await d.fetchval("SELECT 1") == 1


async def test_postgres_scheme_alias(clean_env):
    url = "postgres://" + PG_URL.split("://", 1)[1]
    async with keel.Database(url) as d:
        assert d.engine() == "postgresql"
        assert await d.fetchval("SELECT 1") == 1


async def test_default_config_is_a_local_sqlite_file(tmp_path, clean_env):
    clean_env.chdir(tmp_path)
    async with keel.Database() as d:
        assert d.databases == ["default"]
        assert d.engine() == "sqlite"
        await d.execute("CREATE TABLE marker (a INTEGER)")
    assert (tmp_path / "keel.db").exists()


async def test_env_overrides_yaml(tmp_path, clean_env):
    path = write_yaml(tmp_path, "sqlite:///" + str(tmp_path / "main.db"), "sqlite:///" + str(tmp_path / "local.db"))
    clean_env.setenv("KEEL_DATABASES__MAIN__URL", PG_URL)
    clean_env.setenv("KEEL_DATABASES__MAIN__POOL__MAX_SIZE", "7")
    async with keel.Database(str(path)) as d:
        assert d.engine("main") == "postgresql"
        assert d.engine("local") == "sqlite"
        assert d.pool_stats("main")["max_size"] == 7
        assert await d.fetchval("SELECT current_database()", database="main") == pg_parts()["database"]
    assert not (tmp_path / "main.db").exists()


async def test_env_configures_the_default_database(tmp_path, clean_env):
    clean_env.chdir(tmp_path)
    clean_env.setenv("KEEL_DATABASES__DEFAULT__URL", PG_URL)
    async with keel.Database() as d:
        assert d.engine() == "postgresql"
        assert await d.fetchval("SELECT current_database()") == pg_parts()["database"]
    assert not (tmp_path / "keel.db").exists()


async def test_env_adds_a_database_and_chooses_the_default(tmp_path, clean_env):
    path = write_yaml(tmp_path, PG_URL, "sqlite:///" + str(tmp_path / "local.db"))
    clean_env.setenv("KEEL_DATABASES__EXTRA__URL", "sqlite:///" + str(tmp_path / "extra.db"))
    clean_env.setenv("KEEL_DEFAULT", "extra")
    async with keel.Database(str(path)) as d:
        assert "extra" in d.databases
        assert d.default_database == "extra"
        assert d.engine() == "sqlite"
        await d.execute("CREATE TABLE marker (a INTEGER)")
    assert (tmp_path / "extra.db").exists()


async def test_env_secret_reference_postgresql(clean_env):
    parts = pg_parts()
    clean_env.setenv("KEEL_TEST_SECRET_DBNAME", parts["database"])
    d = keel.Database({"databases": {"main": {
        "engine": "postgresql", "host": parts["host"], "port": parts["port"], "user": parts["user"],
        "database": "${env:KEEL_TEST_SECRET_DBNAME}"}}})
    async with d:
        assert await d.fetchval("SELECT current_database()") == parts["database"]


async def test_env_secret_reference_sqlite(tmp_path, clean_env):
    target = tmp_path / "from-secret.db"
    clean_env.setenv("KEEL_TEST_SECRET_PATH", str(target))
    d = keel.Database({"databases": {"main": {
        "engine": "sqlite", "database": "${env:KEEL_TEST_SECRET_PATH}"}}})
    async with d:
        await d.execute("CREATE TABLE marker (a INTEGER)")
        assert await d.fetchval("SELECT count(*) FROM marker") == 0
    assert target.exists()


async def test_secret_is_reread_for_new_connections(clean_env):
    parts = pg_parts()
    clean_env.setenv("KEEL_TEST_ROTATING_DBNAME", "keel_no_such_database_here")
    d = keel.Database({"databases": {"main": {
        "engine": "postgresql", "host": parts["host"], "port": parts["port"], "user": parts["user"],
        "database": "${env:KEEL_TEST_ROTATING_DBNAME}", "pool": {"min_size": 0, "max_size": 1}}}})
    async with d:
        with pytest.raises(keel.Error) as ei:
            await d.fetchval("SELECT 1")
        assert isinstance(ei.value, keel.OperationalError)
        clean_env.setenv("KEEL_TEST_ROTATING_DBNAME", parts["database"])
        assert await d.fetchval("SELECT current_database()") == parts["database"]


async def test_secret_values_never_appear_in_errors(clean_env):
    secret = "TopSecretValue42"
    clean_env.setenv("KEEL_TEST_SECRET_PW", secret)
    d = keel.Database({"databases": {"main": {
        "url": "postgresql://postgres@127.0.0.1:1/x", "password": "${env:KEEL_TEST_SECRET_PW}",
        "connect_timeout": 2}}})
    async with d:
        with pytest.raises(keel.ConnectError) as ei:
            await d.fetchval("SELECT 1")
        assert secret not in str(ei.value) and secret not in repr(ei.value)
    assert secret not in repr(d)


async def test_missing_secret_names_the_variable(clean_env):
    clean_env.delenv("KEEL_TEST_UNSET_SECRET", raising=False)
    d = keel.Database({"databases": {"main": {
        "url": PG_URL, "password": "${env:KEEL_TEST_UNSET_SECRET}", "connect_timeout": 2}}})
    async with d:
        with pytest.raises(keel.Error) as ei:
            await d.fetchval("SELECT 1")
        assert "KEEL_TEST_UNSET_SECRET" in str(ei.value)


def test_database_repr_hides_the_password(clean_env):
    d = keel.Database({"databases": {"main": {"url": "postgresql://postgres:ReprSecret99@127.0.0.1:1/x"}}})
    assert "ReprSecret99" not in repr(d)
    assert "ReprSecret99" not in str(d)
