# tests/python/test_config.py - configuration sources: dict, YAML file, URL, default, KEEL_ environment, secrets.
import asyncio
import os
import pathlib
import sqlite3
import urllib.parse

import pytest

import keel
import keel.sync
from conftest import MYSQL_URL, PG_URL, mysql_parts, pg_parts


def with_query(url, query):
    """url with the query string query appended."""
    return url + ("&" if "?" in url else "?") + query


@pytest.fixture
def clean_env(monkeypatch):
    """Removes KEEL_ configuration variables so each test sets exactly what it means to."""
    for name in list(os.environ):
        if name.startswith("KEEL_") and not name.startswith("KEEL_TEST_"):
            monkeypatch.delenv(name)
    monkeypatch.delenv("DATABASE_URL", raising=False)
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


@pytest.mark.parametrize("name", ["notes.db", "./data/app.sqlite3", "Mixed.SQLite", "pathlike.db"])
async def test_a_path_named_like_an_sqlite_database_opens_it(tmp_path, clean_env, name):
    clean_env.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    config = os.path.join(".", name) if name == "pathlike.db" else name
    d = keel.Database(pathlib.Path(config) if name == "pathlike.db" else config)
    async with d:
        assert d.databases == ["default"] and d.default_database == "default"
        assert d.engine() == "sqlite"
        await d.execute("CREATE TABLE marker (a INTEGER)")
        await d.execute("INSERT INTO marker VALUES ($1)", 7)
    assert (tmp_path / name).exists()
    assert not (tmp_path / "keel.db").exists()
    # Opened again, it is the same database.
    async with keel.Database(config) as d:
        assert await d.fetchval("SELECT a FROM marker") == 7


async def test_the_environment_overrides_an_sqlite_database_path(tmp_path, clean_env):
    # keel.Database("notes.db") in the code, the database URL in the deployment's environment:
    # the environment wins, as over a YAML file (it was a ConfigError about the engine).
    clean_env.chdir(tmp_path)
    clean_env.setenv("KEEL_DATABASES__DEFAULT__URL", PG_URL)
    clean_env.setenv("KEEL_DATABASES__DEFAULT__POOL__MAX_SIZE", "3")
    async with keel.Database("notes.db") as d:
        assert d.engine() == "postgresql" and d.pool_stats()["max_size"] == 3
        assert await d.fetchval("SELECT 1") == 1
    assert not (tmp_path / "notes.db").exists()
    clean_env.delenv("KEEL_DATABASES__DEFAULT__URL")
    async with keel.Database("notes.db") as d:      # without it, the file, with the pool size
        assert d.engine() == "sqlite" and d.pool_stats()["max_size"] == 3
        await d.execute("CREATE TABLE t (x INTEGER)")
    assert (tmp_path / "notes.db").exists()


async def test_memory_is_an_in_memory_sqlite_database(tmp_path, clean_env):
    # sqlite3.connect(":memory:")'s name: one in-memory database shared by the pool, no file.
    clean_env.chdir(tmp_path)
    async with keel.Database(":memory:") as d:
        assert d.databases == ["default"] and d.engine() == "sqlite"
        await d.execute("CREATE TABLE m (x INTEGER)")
        await d.execute("INSERT INTO m VALUES (1)")
        async with d.connection() as c1, d.connection() as c2:   # two connections, one database
            assert await c1.fetchval("SELECT count(*) FROM m") == 1
            assert await c2.fetchval("SELECT count(*) FROM m") == 1
    with keel.sync.Database(":memory:") as s:
        assert s.fetchval("SELECT count(*) FROM sqlite_master") == 0   # a new, empty one
    assert list(tmp_path.iterdir()) == []
    # Other names are still files or configuration files.
    with pytest.raises(keel.ConfigError, match="'memory'"):
        keel.Database("memory")


async def test_a_file_that_is_an_sqlite_database_opens_it(tmp_path, clean_env):
    path = tmp_path / "store.data"
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE t (x TEXT)")
        con.execute("INSERT INTO t VALUES ('from sqlite3')")
    con.close()
    async with keel.Database(str(path)) as d:
        assert d.engine() == "sqlite"
        assert await d.fetchval("SELECT x FROM t") == "from sqlite3"


async def test_a_path_named_like_a_database_that_is_not_one(tmp_path, clean_env):
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not an SQLite database, it only has the name of one" * 100)
    async with keel.Database(str(path)) as d:
        with pytest.raises(keel.DatabaseError) as ei:
            await d.fetchval("SELECT count(*) FROM sqlite_master")
        assert "not a database" in str(ei.value)
    # A directory named like a database is not a configuration file either.
    with pytest.raises(keel.ConfigError) as ei:
        keel.Database(str(tmp_path))
    assert str(tmp_path) in str(ei.value)


async def test_keel_variables_that_name_no_key_are_ignored(tmp_path, clean_env):
    # What Kubernetes defines in every pod of a namespace with a Service named keel, and others.
    clean_env.chdir(tmp_path)
    for name, value in [("KEEL_PORT", "tcp://10.0.0.7:5432"), ("KEEL_SERVICE_HOST", "10.0.0.7"),
                        ("KEEL_SERVICE_PORT", "5432"), ("KEEL_PORT_5432_TCP_ADDR", "10.0.0.7"),
                        ("KEEL_PORT_5432_TCP", "tcp://10.0.0.7:5432"),
                        ("KEEL_FEATURE__FLAGS", "a,b"), ("KEEL_POOL", "x")]:
        clean_env.setenv(name, value)
    async with keel.Database() as d:
        assert d.databases == ["default"] and d.engine() == "sqlite"
        assert await d.fetchval("SELECT 1") == 1
    # A variable that names a key is still read, and a wrong one still refused, by name.
    clean_env.setenv("KEEL_POOL__MAX_SIZE", "3")
    async with keel.Database() as d:
        assert d.pool_stats()["max_size"] == 3
    clean_env.setenv("KEEL_DATABASES__DEFAULT__POL__MAX_SIZE", "3")
    with pytest.raises(keel.ConfigError) as ei:
        keel.Database()
    assert "KEEL_DATABASES__DEFAULT__POL__MAX_SIZE" in str(ei.value)
    assert "did you mean 'databases.default.pool.max_size'" in str(ei.value)


async def test_database_url_when_nothing_else_configures_a_database(tmp_path, clean_env):
    clean_env.chdir(tmp_path)
    clean_env.setenv("DATABASE_URL", PG_URL)
    async with keel.Database() as d:
        assert d.databases == ["default"] and d.engine() == "postgresql"
        assert await d.fetchval("SELECT current_database()") == pg_parts()["database"]
    # Any configured database wins over it.
    async with keel.Database("sqlite::memory:") as d:
        assert d.engine() == "sqlite"
    async with keel.Database(str(tmp_path / "x.db")) as d:
        assert d.engine() == "sqlite"
    clean_env.setenv("KEEL_DATABASES__DEFAULT__URL", "sqlite::memory:")
    async with keel.Database() as d:
        assert d.engine() == "sqlite"
    assert not (tmp_path / "keel.db").exists()
    clean_env.delenv("KEEL_DATABASES__DEFAULT__URL")
    clean_env.setenv("DATABASE_URL", "postgresql://u:hunter2@h:port/db")
    with pytest.raises(keel.ConfigError) as ei:
        keel.Database()
    assert "DATABASE_URL" in str(ei.value) and "hunter2" not in str(ei.value)


DRIVERS = {"postgresql": ["asyncpg", "psycopg"], "mysql": ["aiomysql", "asyncmy", "pymysql"],
           "sqlite": ["aiosqlite"]}


async def test_urls_with_a_driver_suffix_use_keels_driver(engine, db_url, tmp_path, clean_env):
    # SQLAlchemy's and encode/databases' SCHEME+DRIVER URLs, as DATABASE_URL often holds them.
    scheme, rest = db_url.split(":", 1)
    for driver in DRIVERS[engine]:
        url = f"{scheme}+{driver}:{rest}"
        async with keel.Database(url) as d:
            assert d.engine() == engine and await d.fetchval("SELECT 1") == 1
    clean_env.chdir(tmp_path)
    clean_env.setenv("DATABASE_URL", f"{scheme}+{DRIVERS[engine][0]}:{rest}")
    async with keel.Database() as d:
        assert d.engine() == engine and await d.fetchval("SELECT 1") == 1
    with keel.sync.Database(f"{scheme}+{DRIVERS[engine][0]}:{rest}") as d:
        assert d.fetchval("SELECT 1") == 1


def test_an_unknown_scheme_with_a_driver_suffix_is_refused(clean_env):
    with pytest.raises(keel.ConfigError, match=r"unsupported URL scheme 'oracle\+cx_oracle'.*"
                                               r"a SQL scheme may carry a driver"):
        keel.Database("oracle+cx_oracle://u:hunter2@h/db")
    with pytest.raises(keel.ConfigError, match=r"unsupported URL scheme 'mongodb\+motor'") as ei:
        keel.Database("mongodb+motor://u:hunter2@h/db")
    assert "hunter2" not in str(ei.value)


async def test_database_with_no_argument_reads_keel_config(tmp_path, clean_env):
    # The file keel check reads: KEEL_CONFIG (the KEEL_... variables override it).
    app = tmp_path / "app.yaml"
    app.write_text("databases:\n  fromfile:\n    url: \"sqlite:///%s\"\n" % (tmp_path / "f.db"),
                   encoding="utf-8")
    clean_env.chdir(tmp_path)
    clean_env.setenv("KEEL_CONFIG", str(app))
    clean_env.setenv("DATABASE_URL", PG_URL)   # a configured database wins over it
    async with keel.Database() as d:
        assert d.databases == ["fromfile"] and d.engine() == "sqlite"
        assert await d.fetchval("SELECT 7") == 7
    with keel.sync.Database() as d:
        assert d.databases == ["fromfile"] and d.fetchval("SELECT 8") == 8
    clean_env.setenv("KEEL_DATABASES__FROMFILE__POOL__MAX_SIZE", "3")
    assert keel.Database().databases == ["fromfile"]
    clean_env.delenv("KEEL_DATABASES__FROMFILE__POOL__MAX_SIZE")
    # An argument wins over KEEL_CONFIG.
    assert keel.Database("sqlite::memory:").databases == ["default"]
    # A file that cannot be read names the variable.
    clean_env.setenv("KEEL_CONFIG", str(tmp_path / "missing.yaml"))
    with pytest.raises(keel.ConfigError, match=r"^KEEL_CONFIG: .*missing\.yaml"):
        keel.Database()
    with pytest.raises(keel.ConfigError, match=r"^KEEL_CONFIG: .*missing\.yaml"):
        keel.sync.Database()
    # Without KEEL_CONFIG, ./keel.yaml is not read (keel check's fallback only): DATABASE_URL.
    clean_env.delenv("KEEL_CONFIG")
    (tmp_path / "keel.yaml").write_text(app.read_text(encoding="utf-8"), encoding="utf-8")
    async with keel.Database() as d:
        assert d.databases == ["default"] and d.engine() == "postgresql"


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



# MySQL/MariaDB: URLs, options and keys.

async def test_mysql_url_with_charset_and_pool_parameters(clean_env):
    url = with_query(MYSQL_URL, "charset=utf8mb4&min_size=2&max_size=3&acquire_timeout=2.5"
                                "&connect_timeout=4")
    async with keel.Database(url) as d:
        assert d.engine() == "mysql"
        stats = d.pool_stats()
        assert (stats["min_size"], stats["max_size"]) == (2, 3)
        assert stats["acquire_timeout"] == pytest.approx(2.5)
        row = await d.fetchrow("SELECT DATABASE() AS db, @@character_set_client AS client, "
                               "@@character_set_results AS results, @@time_zone AS tz")
        assert dict(row) == {"db": mysql_parts()["database"], "client": "utf8mb4",
                             "results": "utf8mb4", "tz": "+00:00"}
        # Both connections of min_size are opened, and both are set up alike.
        a, b = await d.acquire(), await d.acquire()
        try:
            for conn in (a, b):
                assert await conn.fetchval("SELECT @@character_set_connection") == "utf8mb4"
                assert await conn.fetchval("SELECT @@time_zone") == "+00:00"
        finally:
            await d.release(a)
            await d.release(b)


async def test_mariadb_scheme_alias(clean_env):
    url = "mariadb://" + MYSQL_URL.split("://", 1)[1]
    async with keel.Database(url) as d:
        assert d.engine() == "mysql"
        assert await d.fetchval("SELECT DATABASE()") == mysql_parts()["database"]


async def test_mysql_from_keys_with_a_secret_reference(clean_env):
    parts = mysql_parts()
    clean_env.setenv("KEEL_TEST_MYSQL_DBNAME", parts["database"])
    d = keel.Database({"databases": {"main": {
        "engine": "mysql", "host": parts["host"], "port": parts["port"], "user": parts["user"],
        "database": "${env:KEEL_TEST_MYSQL_DBNAME}", "options": {"charset": "utf8mb4"}}}})
    async with d:
        assert d.engine() == "mysql"
        assert await d.fetchval("SELECT DATABASE()") == parts["database"]


async def test_yaml_file_with_all_three_sql_engines(tmp_path, clean_env):
    path = tmp_path / "keel.yaml"
    path.write_text(f"""\
default: mysql
databases:
  pg:
    url: "{PG_URL}"
  mysql:
    url: "{MYSQL_URL}"
    connect_timeout: 5
    options:
      charset: utf8mb4
    pool:
      max_size: 3
  local:
    url: "sqlite:///{tmp_path / 'local.db'}"
""", encoding="utf-8")
    async with keel.Database(str(path)) as d:
        assert d.databases == ["pg", "mysql", "local"]
        assert [d.engine(n) for n in d.databases] == ["postgresql", "mysql", "sqlite"]
        assert d.default_database == "mysql"
        assert d.pool_stats()["max_size"] == 3
        assert await d.fetchval("SELECT DATABASE()") == mysql_parts()["database"]
        assert await d.fetchval("SELECT current_database()", database="pg") == pg_parts()["database"]
        assert await d.fetchval("SELECT 40 + 2", database="local") == 42
        async with d.transaction() as conn:
            assert conn.engine == "mysql" and conn.in_transaction
            assert await conn.fetchval("SELECT @@in_transaction") == 1


async def test_env_points_a_database_at_mysql(tmp_path, clean_env):
    path = write_yaml(tmp_path, PG_URL, "sqlite:///" + str(tmp_path / "local.db"))
    clean_env.setenv("KEEL_DATABASES__MAIN__URL", MYSQL_URL)
    clean_env.setenv("KEEL_DATABASES__MAIN__POOL__MAX_SIZE", "2")
    async with keel.Database(str(path)) as d:
        assert d.engine("main") == "mysql"
        assert d.pool_stats("main")["max_size"] == 2
        assert await d.fetchval("SELECT DATABASE()") == mysql_parts()["database"]


async def test_mysql_wrong_password_is_a_connect_error_without_the_secret(clean_env):
    secret = "WrongMySQLPw77"
    clean_env.setenv("KEEL_TEST_MYSQL_PW", secret)
    parts = mysql_parts()
    d = keel.Database({"databases": {"main": {
        "engine": "mysql", "host": parts["host"], "port": parts["port"],
        "user": "keel_no_such_user", "password": "${env:KEEL_TEST_MYSQL_PW}",
        "database": parts["database"], "connect_timeout": 5}}})
    async with d:
        with pytest.raises(keel.ConnectError) as ei:
            await d.fetchval("SELECT 1")
        assert ei.value.engine == "mysql" and ei.value.database == "main"
        assert "keel_no_such_user" in str(ei.value)
        assert secret not in str(ei.value) and secret not in repr(ei.value)
    assert secret not in repr(d)


async def test_mysql_charset_keeps_text_utf8(clean_env):
    # keel's text is UTF-8 (KEEL_TYPE_TEXT). A session character set that is not UTF-8 must
    # either be refused up front, or not change what keel sends and reads: text written through
    # it reads back the same through a utf8mb4 session, and text others wrote reads back too.
    url = with_query(MYSQL_URL, "charset=latin1")
    try:
        d = keel.Database(url)
    except keel.ConfigError as e:
        assert "charset" in str(e)
        return
    t = "t_charset_" + os.urandom(5).hex()
    async with keel.Database(MYSQL_URL) as utf8, d:
        await utf8.execute(f"CREATE TABLE {t} (id BIGINT, v VARCHAR(20))")
        try:
            await utf8.execute(f"INSERT INTO {t} VALUES (1, $1)", "é ü")
            await d.execute(f"INSERT INTO {t} VALUES (2, $1)", "é ü")
            assert await d.fetchval(f"SELECT v FROM {t} WHERE id = $1", 1) == "é ü"
            assert await utf8.fetchval(f"SELECT v FROM {t} WHERE id = $1", 2) == "é ü"
            assert await utf8.fetchval(f"SELECT char_length(v) FROM {t} WHERE id = 2") == 3
        finally:
            await utf8.execute(f"DROP TABLE IF EXISTS {t}")


async def test_mysql_over_a_unix_socket(clean_env):
    # A host starting with '/' is the server's Unix socket (percent-encoded in a URL). Where the
    # server's socket is not on this machine (a remote KEEL_TEST_MYSQL_URL) there is nothing to test.
    async with keel.Database(MYSQL_URL) as tcp:
        socket_path = await tcp.fetchval("SELECT @@socket")
    if not socket_path or not os.path.exists(socket_path):
        pytest.skip(f"the MySQL server's socket {socket_path!r} is not on this machine")
    parts = mysql_parts()
    url = (f"mysql://{urllib.parse.quote(parts['user'], safe='')}@"
           f"{urllib.parse.quote(socket_path, safe='')}/{parts['database']}")
    keys = {"databases": {"main": {"engine": "mysql", "host": socket_path, "user": parts["user"],
                                   "database": parts["database"],
                                   "pool": {"min_size": 1, "max_size": 1}}}}
    for config in (url, keys):
        async with keel.Database(config) as d:
            assert d.engine() == "mysql"
            assert await d.fetchval("SELECT DATABASE()") == parts["database"]
            # Cancellation reaches the server over the socket too (KILL QUERY from a second
            # session): the single connection is free again at once.
            task = asyncio.create_task(d.fetchval("SELECT SLEEP(10)"))
            await asyncio.sleep(0.2)
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=3)
            assert task in done and task.cancelled()
            async with asyncio.timeout(3):
                assert await d.fetchval("SELECT 1") == 1


@pytest.mark.parametrize("engine", ["postgresql", "mysql"])
async def test_a_host_name_is_resolved_before_connecting(engine):
    # The tests' servers are given by address; by name, keel looks the name up off the loop and
    # connects to what it resolves to (TCP, also for MySQL's "localhost").
    url = urllib.parse.urlsplit({"postgresql": PG_URL, "mysql": MYSQL_URL}[engine])
    if url.hostname != "127.0.0.1":
        pytest.skip("the test server is not on 127.0.0.1, which localhost names")
    netloc = url.netloc.replace("127.0.0.1", "localhost")
    async with keel.Database(urllib.parse.urlunsplit(url._replace(netloc=netloc))) as db:
        assert await db.fetchval("SELECT 1") == 1
        if engine == "mysql":
            # Through TCP, not the server's Unix socket that libmariadb takes "localhost" for.
            assert await db.fetchval("SELECT count(*) FROM information_schema.processlist "
                                     "WHERE id = connection_id() AND host LIKE '%:%'") == 1


@pytest.mark.parametrize("engine,option,value", [
    ("postgresql", "sslmode", "maybe"),
    ("postgresql", "connect_timeout", "-3"),
    ("mysql", "ssl_mode", "maybe"),
    ("mysql", "connect_timeout", "soon"),
])
async def test_an_option_given_by_reference_is_checked_when_resolved(monkeypatch, engine, option,
                                                                     value):
    # A secret reference is resolved at connect time, so its value is checked then: the connect
    # fails with a ConfigError naming the key (not the value, which may be a secret), as a
    # literal value fails the configuration.
    monkeypatch.setenv("KEEL_TEST_OPTION_VALUE", value)
    url = {"postgresql": PG_URL, "mysql": MYSQL_URL}[engine]
    config = {"databases": {"main": {"url": url, "pool": {"min_size": 0},
                                     "options": {option: "${env:KEEL_TEST_OPTION_VALUE}"}}}}
    async with keel.Database(config) as db:
        with pytest.raises(keel.ConfigError) as ei:
            await db.fetchval("SELECT 1")
    assert str(ei.value).startswith(f"databases.main.options.{option}: invalid value (expected "), \
        str(ei.value)
    assert value not in str(ei.value)


async def test_pool_lifecycle_keys(tmp_path, clean_env):
    # idle_timeout, max_lifetime, ping_after_idle and max_waiters are read from a dict, a URL's
    # query and the environment, and a wrong value is refused naming its key path.
    url = "sqlite:///" + str(tmp_path / "p.db")
    clean_env.setenv("KEEL_DATABASES__MAIN__POOL__MAX_WAITERS", "0")
    d = keel.Database({"databases": {"main": {"url": url + "?idle_timeout=none", "pool": {
        "max_size": 1, "max_lifetime": 120, "ping_after_idle": "none"}}}})
    async with d:
        held = await d.acquire()
        try:
            # max_waiters 0 from the environment: a request that would wait fails at once.
            with pytest.raises(keel.PoolTimeout, match="max_waiters 0"):
                await d.acquire()
        finally:
            await d.release(held)
        assert d.stats()["acquire_timeouts"] == 1
    clean_env.delenv("KEEL_DATABASES__MAIN__POOL__MAX_WAITERS")
    for key, value, expected in [
            ("idle_timeout", "-1", "or 0 or 'none' to disable it, got '-1'"),
            ("max_waiters", "lots", "expected a non-negative integer, or 'none' for no limit"),
            ("max_lifetime", "1h", "expected a non-negative number of seconds"),
            ("ping_after_idle", "soon", "expected a non-negative number of seconds")]:
        with pytest.raises(keel.ConfigError) as ei:
            keel.Database({"databases": {"main": {"url": url, "pool": {key: value}}}})
        assert f"databases.main.pool.{key}: " in str(ei.value) and expected in str(ei.value)
