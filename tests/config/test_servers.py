"""The test servers are real and private: they answer, and they are not the machine's own."""

import psycopg2


def test_redis_is_real_and_private(redis_clean):
    client = redis_clean.client()
    assert redis_clean.port != 6379
    client.set("k", "v")
    assert client.get("k") == b"v"
    assert client.config_get("port")["port"] == str(redis_clean.port)


def test_postgres_is_real_and_private(postgres_srv):
    assert postgres_srv.port != 5432
    conn = psycopg2.connect(host=postgres_srv.host, port=postgres_srv.port, user=postgres_srv.user,
                            password=postgres_srv.password, dbname=postgres_srv.database)
    with conn.cursor() as cur:
        cur.execute("SHOW port")
        assert cur.fetchone()[0] == str(postgres_srv.port)
    conn.close()
