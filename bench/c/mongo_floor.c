/* bench/c/mongo_floor.c - the physical floor for the MongoDB cases of workload 9: a C loop over libmongoc. */
/*
 * usage: mongo_floor CONNECTIONS WARMUP_OPS WARMUP_SECONDS MAX_OPS MAX_SECONDS MODE ARGS...
 *   find_one COLLECTION NDOCS     find one document by _id, a pseudo-random key in 1..NDOCS
 *                                 (a find with limit 1 and singleBatch, as find_one sends)
 *   insert_many COLLECTION NDOCS  insert NDOCS documents of workload 9 (see mixed_doc), ordered,
 *                                 in one call; the collection is dropped before and after
 *   find COLLECTION               find every document of the collection, reading each one
 *   insert_one COLLECTION         insert {i, b: "row %08d", c: i * 0.25}, i counting up; the
 *                                 collection is dropped before and after
 *   update_one COLLECTION NDOCS   {$inc: {hits: 1}} on the document of a pseudo-random _id in
 *                                 1..NDOCS
 * The server is FLOOR_MONGO_URL from the environment (its path names the database), with
 * retryWrites off as keel's writes; each connection is a single-threaded mongoc_client_t of its
 * own. Documents are built once, before the loop. Prints the JSON report of floor.h.
 */
#include <mongoc/mongoc.h>

#include "floor.h"

#define PROG "mongo_floor"
/* 2024-01-01 00:00:00 UTC in milliseconds since the epoch. */
#define MS_2024 INT64_C(1704067200000)

enum mode { MODE_FIND_ONE, MODE_INSERT_MANY, MODE_FIND, MODE_INSERT_ONE, MODE_UPDATE_ONE };

typedef struct mongo_state {
    mongoc_client_t *client;
    mongoc_collection_t *coll;
    enum mode mode;
    long long ndocs;
    long long next; /* insert_one: the next document's i */
    bson_t *one_opts;
    bson_t **docs;
} mongo_state;

/* An integer as the Python drivers encode one: int32 when it fits, int64 otherwise. */
static void append_int(bson_t *b, const char *key, int64_t v) {
    if (v >= INT32_MIN && v <= INT32_MAX)
        BSON_APPEND_INT32(b, key, (int32_t)v);
    else
        BSON_APPEND_INT64(b, key, v);
}

/*
 * Workload 9's document i, without _id (the driver adds one): i8 = i * 1000003, f8 = i / 7,
 * t = "row %08d", flag = i even, ts = 2024-01-01 + i minutes, data = bytes 0..15,
 * doc = {id: i, name: "n%d", tags: [i % 3, i % 5]}.
 */
static bson_t *mixed_doc(long long i) {
    static const uint8_t data[16] = { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15 };
    char text[32];
    bson_t *b = bson_new(), sub, tags;
    append_int(b, "i8", i * 1000003);
    BSON_APPEND_DOUBLE(b, "f8", (double)i / 7.0);
    snprintf(text, sizeof text, "row %08lld", i);
    BSON_APPEND_UTF8(b, "t", text);
    BSON_APPEND_BOOL(b, "flag", i % 2 == 0);
    BSON_APPEND_DATE_TIME(b, "ts", MS_2024 + i * 60000);
    BSON_APPEND_BINARY(b, "data", BSON_SUBTYPE_BINARY, data, sizeof data);
    BSON_APPEND_DOCUMENT_BEGIN(b, "doc", &sub);
    append_int(&sub, "id", i);
    snprintf(text, sizeof text, "n%lld", i);
    BSON_APPEND_UTF8(&sub, "name", text);
    BSON_APPEND_ARRAY_BEGIN(&sub, "tags", &tags);
    BSON_APPEND_INT32(&tags, "0", (int32_t)(i % 3));
    BSON_APPEND_INT32(&tags, "1", (int32_t)(i % 5));
    bson_append_array_end(&sub, &tags);
    bson_append_document_end(b, &sub);
    return b;
}

/* Reads every top-level field of a document, as a driver that converts it does. */
static int64_t read_doc(const bson_t *doc) {
    bson_iter_t it;
    int64_t n = doc->len;
    if (bson_iter_init(&it, doc))
        while (bson_iter_next(&it))
            n += bson_iter_type(&it);
    return n;
}

static int cursor_failed(mongoc_cursor_t *cursor) {
    bson_error_t error;
    if (mongoc_cursor_error(cursor, &error)) {
        fprintf(stderr, PROG ": the find failed: %s\n", error.message);
        return 1;
    }
    return 0;
}

static int op_find_one(mongo_state *st, uint64_t *rng, int64_t *sink) {
    bson_t filter = BSON_INITIALIZER;
    BSON_APPEND_INT32(&filter, "_id", (int32_t)(floor_next_random(rng) % (uint64_t)st->ndocs) + 1);
    mongoc_cursor_t *cursor =
        mongoc_collection_find_with_opts(st->coll, &filter, st->one_opts, NULL);
    const bson_t *doc;
    if (mongoc_cursor_next(cursor, &doc))
        *sink += read_doc(doc);
    int failed = cursor_failed(cursor);
    mongoc_cursor_destroy(cursor);
    bson_destroy(&filter);
    return failed ? -1 : 0;
}

static int op_find(mongo_state *st, int64_t *sink) {
    bson_t filter = BSON_INITIALIZER;
    mongoc_cursor_t *cursor = mongoc_collection_find_with_opts(st->coll, &filter, NULL, NULL);
    const bson_t *doc;
    while (mongoc_cursor_next(cursor, &doc))
        *sink += read_doc(doc);
    int failed = cursor_failed(cursor);
    mongoc_cursor_destroy(cursor);
    bson_destroy(&filter);
    return failed ? -1 : 0;
}

static int op_insert_many(mongo_state *st) {
    bson_error_t error;
    if (!mongoc_collection_insert_many(st->coll, (const bson_t **)st->docs, (size_t)st->ndocs, NULL,
                                       NULL, &error)) {
        fprintf(stderr, PROG ": insert_many failed: %s\n", error.message);
        return -1;
    }
    return 0;
}

static int op_insert_one(mongo_state *st) {
    char text[32];
    bson_error_t error;
    long long i = st->next++;
    bson_t doc = BSON_INITIALIZER;
    append_int(&doc, "i", i);
    snprintf(text, sizeof text, "row %08lld", i);
    BSON_APPEND_UTF8(&doc, "b", text);
    BSON_APPEND_DOUBLE(&doc, "c", (double)i * 0.25);
    bool ok = mongoc_collection_insert_one(st->coll, &doc, NULL, NULL, &error);
    bson_destroy(&doc);
    if (!ok) {
        fprintf(stderr, PROG ": insert_one failed: %s\n", error.message);
        return -1;
    }
    return 0;
}

static int op_update_one(mongo_state *st, uint64_t *rng) {
    bson_error_t error;
    bson_t filter = BSON_INITIALIZER;
    BSON_APPEND_INT32(&filter, "_id", (int32_t)(floor_next_random(rng) % (uint64_t)st->ndocs) + 1);
    bson_t *update = BCON_NEW("$inc", "{", "hits", BCON_INT32(1), "}");
    bool ok = mongoc_collection_update_one(st->coll, &filter, update, NULL, NULL, &error);
    bson_destroy(update);
    bson_destroy(&filter);
    if (!ok) {
        fprintf(stderr, PROG ": update_one failed: %s\n", error.message);
        return -1;
    }
    return 0;
}

static int run_once(void *arg, uint64_t *rng, int64_t *sink) {
    mongo_state *st = arg;
    switch (st->mode) {
    case MODE_FIND_ONE:
        return op_find_one(st, rng, sink);
    case MODE_INSERT_MANY:
        return op_insert_many(st);
    case MODE_FIND:
        return op_find(st, sink);
    case MODE_INSERT_ONE:
        return op_insert_one(st);
    case MODE_UPDATE_ONE:
        return op_update_one(st, rng);
    }
    return -1;
}

/* Drops the collection; a collection that does not exist is not an error. */
static int drop(mongo_state *st) {
    bson_error_t error;
    if (!mongoc_collection_drop(st->coll, &error) && strstr(error.message, "not found") == NULL) {
        fprintf(stderr, PROG ": cannot drop the collection: %s\n", error.message);
        return -1;
    }
    return 0;
}

static int setup(mongo_state *st, const mongoc_uri_t *uri, const char *mode, char **args,
                 int nargs) {
    const char *db = mongoc_uri_get_database(uri);
    st->client = mongoc_client_new_from_uri(uri);
    if (st->client == NULL) {
        fprintf(stderr, PROG ": cannot make a client\n");
        return -1;
    }
    mongoc_client_set_error_api(st->client, MONGOC_ERROR_API_VERSION_2);
    if (nargs < 1) {
        fprintf(stderr, PROG ": no collection given\n");
        return -1;
    }
    st->coll = mongoc_client_get_collection(st->client, db ? db : "keel_test", args[0]);
    if (strcmp(mode, "find_one") == 0 && nargs == 2) {
        st->mode = MODE_FIND_ONE;
        st->ndocs = floor_parse_count(PROG, "NDOCS", args[1]);
        st->one_opts = BCON_NEW("limit", BCON_INT64(1), "singleBatch", BCON_BOOL(true));
        return st->ndocs < 1 ? -1 : 0;
    }
    if (strcmp(mode, "insert_many") == 0 && nargs == 2) {
        st->mode = MODE_INSERT_MANY;
        st->ndocs = floor_parse_count(PROG, "NDOCS", args[1]);
        if (st->ndocs < 1)
            return -1;
        st->docs = calloc((size_t)st->ndocs, sizeof *st->docs);
        if (st->docs == NULL)
            return -1;
        for (long long i = 0; i < st->ndocs; i++)
            st->docs[i] = mixed_doc(i);
        return drop(st);
    }
    if (strcmp(mode, "insert_one") == 0 && nargs == 1) {
        st->mode = MODE_INSERT_ONE;
        return drop(st);
    }
    if (strcmp(mode, "update_one") == 0 && nargs == 2) {
        st->mode = MODE_UPDATE_ONE;
        st->ndocs = floor_parse_count(PROG, "NDOCS", args[1]);
        return st->ndocs < 1 ? -1 : 0;
    }
    if (strcmp(mode, "find") == 0 && nargs == 1) {
        st->mode = MODE_FIND;
        return 0;
    }
    fprintf(stderr,
            PROG ": unknown mode or wrong arguments: %s (find_one COLLECTION NDOCS | "
                 "insert_many COLLECTION NDOCS | find COLLECTION | insert_one COLLECTION | "
                 "update_one COLLECTION NDOCS)\n",
            mode);
    return -1;
}

static void teardown(mongo_state *st) {
    if ((st->mode == MODE_INSERT_MANY || st->mode == MODE_INSERT_ONE) && st->coll != NULL)
        drop(st);
    for (long long i = 0; st->docs != NULL && i < st->ndocs; i++)
        bson_destroy(st->docs[i]);
    free(st->docs);
    if (st->one_opts)
        bson_destroy(st->one_opts);
    if (st->coll)
        mongoc_collection_destroy(st->coll);
    if (st->client)
        mongoc_client_destroy(st->client);
}

int main(int argc, char **argv) {
    if (argc < 7) {
        fprintf(stderr,
                "usage: " PROG
                " CONNECTIONS WARMUP_OPS WARMUP_SECONDS MAX_OPS MAX_SECONDS MODE ARGS...\n");
        return 2;
    }
    long long n = floor_parse_count(PROG, "CONNECTIONS", argv[1]);
    floor_limits limits = floor_parse_limits(PROG, argv + 2);
    if (n < 1 || n > 1024) {
        fprintf(stderr, PROG ": CONNECTIONS must be 1 to 1024\n");
        return 2;
    }
    const char *url = getenv("FLOOR_MONGO_URL");
    mongoc_init();
    bson_error_t error;
    mongoc_uri_t *uri =
        mongoc_uri_new_with_error(url ? url : "mongodb://127.0.0.1:27017/keel_test", &error);
    if (uri == NULL) {
        fprintf(stderr, PROG ": FLOOR_MONGO_URL is not a MongoDB URL: %s\n", error.message);
        mongoc_cleanup();
        return 2;
    }
    /* keel sends its writes as write commands of its own, which libmongoc does not retry: with
     * retryWrites off the floor sends the same commands (no txnNumber for the server to track). */
    mongoc_uri_set_option_as_bool(uri, MONGOC_URI_RETRYWRITES, false);
    mongo_state *st = calloc((size_t)n, sizeof *st);
    void **states = calloc((size_t)n, sizeof *states);
    int failed = st == NULL || states == NULL;
    for (long long i = 0; i < n && !failed; i++) {
        states[i] = &st[i];
        failed = setup(&st[i], uri, argv[6], argv + 7, argc - 7) != 0;
    }
    if (!failed)
        failed = floor_measure(PROG, run_once, states, (int)n, &limits);
    for (long long i = 0; st != NULL && i < n; i++)
        teardown(&st[i]);
    free(st);
    free(states);
    mongoc_uri_destroy(uri);
    mongoc_cleanup();
    return failed ? 1 : 0;
}
