/*
 * SQLite in multi-threaded mode, as an application server uses it: a pool
 * of threads, each with its own connection to one database (its default
 * rollback journal), inserting
 * orders in small transactions and reading the running total, retrying
 * when the database is busy.  What each thread reads depends on how the
 * threads interleaved; the final totals do not.
 *
 * usage: sqlite_threads DB [threads] [orders]
 */
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static const char *path;
static int orders = 100;
static pthread_barrier_t start;

static void check(int rc, sqlite3 *db, const char *what)
{
    if (rc != SQLITE_OK && rc != SQLITE_DONE && rc != SQLITE_ROW) {
        fprintf(stderr, "%s: %s\n", what, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        exit(1);
    }
}

static void *worker(void *arg)
{
    long id = (long)arg;
    sqlite3 *db;
    check(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL), NULL, "open");
    sqlite3_busy_timeout(db, 10000);
    sqlite3_stmt *ins, *sum;
    check(sqlite3_prepare_v2(db, "INSERT INTO orders(worker, amount) VALUES (?, ?)", -1, &ins, NULL), db, "prepare");
    check(sqlite3_prepare_v2(db, "SELECT count(*), total(amount) FROM orders", -1, &sum, NULL), db, "prepare");
    long seen = 0;
    pthread_barrier_wait(&start);
    for (int i = 0; i < orders; i++) {
        if (i % 10 == 0) check(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL), db, "begin");
        sqlite3_bind_int64(ins, 1, id);
        sqlite3_bind_int64(ins, 2, id * 1000 + i);
        check(sqlite3_step(ins), db, "insert");
        sqlite3_reset(ins);
        if (i % 10 == 9) {
            check(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), db, "commit");
            check(sqlite3_step(sum), db, "sum");
            seen += sqlite3_column_int64(sum, 0);
            sqlite3_reset(sum);
        }
    }
    sqlite3_finalize(ins);
    sqlite3_finalize(sum);
    sqlite3_close(db);
    printf("worker %ld: %d orders, saw %ld rows in all its reads\n", id, orders, seen);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s DB [threads] [orders]\n", argv[0]);
        return 2;
    }
    path = argv[1];
    int threads = argc > 2 ? atoi(argv[2]) : 4;
    if (argc > 3) orders = atoi(argv[3]);
    if (!sqlite3_threadsafe()) {
        fprintf(stderr, "this SQLite was built without threads\n");
        return 2;
    }
    sqlite3 *db;
    check(sqlite3_open(path, &db), NULL, "open");
    check(sqlite3_exec(db, "DROP TABLE IF EXISTS orders;"
                           "CREATE TABLE orders(id INTEGER PRIMARY KEY, worker INT, amount INT)",
                       NULL, NULL, NULL), db, "create");
    pthread_t t[64];
    if (threads > 64) threads = 64;
    pthread_barrier_init(&start, NULL, threads);
    for (long i = 0; i < threads && i < 64; i++) pthread_create(&t[i], NULL, worker, (void *)i);
    for (int i = 0; i < threads && i < 64; i++) pthread_join(t[i], NULL);
    sqlite3_stmt *q;
    check(sqlite3_prepare_v2(db, "SELECT count(*), total(amount) FROM orders", -1, &q, NULL), db, "prepare");
    check(sqlite3_step(q), db, "count");
    printf("orders %lld total %.0f\n", sqlite3_column_int64(q, 0), sqlite3_column_double(q, 1));
    sqlite3_finalize(q);
    sqlite3_close(db);
    return 0;
}
