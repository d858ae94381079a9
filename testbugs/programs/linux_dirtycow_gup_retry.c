/*
 * Models CVE-2016-5195 ("Dirty COW"; fixed by Linux commit 19be0eaffa3a,
 * "mm: remove gup_flags FOLL_WRITE games from __get_user_pages()"): a
 * write through /proc/self/mem to a private, read-only file mapping goes
 * through get_user_pages.  Its first lookup asks for a writable page and
 * finds the page cache's read-only one; the fault handler breaks
 * copy-on-write (the mapping now points to a private copy) and drops
 * FOLL_WRITE, so that the lookup retried after cond_resched() takes
 * whatever page is mapped.  madvise(MADV_DONTNEED) on the same range,
 * holding mmap_sem for reading as the writer does, can zap the private
 * copy in between: the retry faults the page in for reading, gets the
 * page cache's own page, and the write lands in the file.
 *
 * Here the kernel's page table entry is a pointer (the page cache's page,
 * the private copy, or NULL when zapped) and mmap_sem a pthread rwlock
 * that both threads take for reading.
 *
 * usage: linux_dirtycow_gup_retry [writes] [window]
 *   writes: writes through /proc/self/mem (more = more failures)
 *   window: work in cond_resched() between the fault and the retry
 */
#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char page_cache[32] = "root:x:0:0:root:/root:/bin/sh"; /* the file */
static char private_copy[32];          /* the writer's copy-on-write page */
static char *volatile pte;             /* the mapping: NULL when zapped */
static pthread_rwlock_t mmap_sem = PTHREAD_RWLOCK_INITIALIZER;
static int writes = 100, window = 20;

static void spin(long n) { for (volatile long i = 0; i < n; i++) ; }

/* follow_page_mask: the mapped page, if this access may use it. */
static char *follow_page(int foll_write)
{
    char *page = pte;                               /* RACE */
    if (page == NULL)
        return NULL;
    if (foll_write && page == page_cache)
        return NULL;                                /* read-only: fault */
    return page;
}

/* faultin_page: a write fault breaks COW and drops FOLL_WRITE ("the
 * retry will find the copy"); a read fault maps the page cache's page. */
static void faultin_page(int *foll_write)
{
    if (*foll_write) {
        memcpy(private_copy, page_cache, sizeof private_copy);
        pte = private_copy;                         /* RACE */
        *foll_write = 0;
    } else {
        pte = page_cache;                           /* RACE */
    }
}

/* write(/proc/self/mem): get_user_pages, then the copy into the page. */
static void *mem_writer(void *arg)
{
    (void)arg;
    for (int i = 0; i < writes; i++) {
        pthread_rwlock_rdlock(&mmap_sem);
        int foll_write = 1;
        char *page;
        while ((page = follow_page(foll_write)) == NULL) {
            faultin_page(&foll_write);
            spin(window);                           /* cond_resched() */
        }
        page[0] = 'X';
        pthread_rwlock_unlock(&mmap_sem);
        pte = page_cache;          /* the next write starts from a fresh mapping */
        spin(100);
    }
    return NULL;
}

/* madvise(MADV_DONTNEED) in a loop: zap_page_range drops the private copy. */
static void *madviser(void *arg)
{
    (void)arg;
    for (int i = 0; i < writes * 4; i++) {
        pthread_rwlock_rdlock(&mmap_sem);
        pte = NULL;                                 /* RACE */
        pthread_rwlock_unlock(&mmap_sem);
        spin(window / 4 + 30);     /* four zaps per write, for as long */
    }
    return NULL;
}

int main(int argc, char **argv)
{
    pthread_t w, m;
    if (argc > 1) writes = atoi(argv[1]);
    if (argc > 2) window = atoi(argv[2]);
    pte = page_cache;
    pthread_create(&w, NULL, mem_writer, NULL);
    pthread_create(&m, NULL, madviser, NULL);
    pthread_join(w, NULL);
    pthread_join(m, NULL);
    /* Someone reads the file later: the damage shows long after the race. */
    assert(page_cache[0] == 'r' && "a write to a private mapping reached the file");
    printf("file: %.10s\n", page_cache);
    return 0;
}
