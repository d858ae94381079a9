/* Syscall-heavy microbenchmark for `reprise bench record`.
 *
 * usage: reads FILE [COUNT [SIZE]]   (defaults: 1000000 reads of 64 bytes)
 *
 * Reads FILE sequentially in SIZE-byte pread(2) calls, COUNT of them,
 * wrapping around at the end of the file, and prints a checksum of all the
 * bytes read, so the output is the same natively and under record. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: reads FILE [COUNT [SIZE]]\n");
        return 2;
    }
    unsigned long count = argc > 2 ? strtoul(argv[2], NULL, 10) : 1000000UL;
    size_t size = argc > 3 ? strtoul(argv[3], NULL, 10) : 64;
    char buf[4096];
    if (size == 0 || size > sizeof buf) {
        fprintf(stderr, "reads: bad read size\n");
        return 2;
    }
    int fd = open(argv[1], O_RDONLY);
    if (fd < 0) {
        perror(argv[1]);
        return 1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || (size_t)st.st_size < size) {
        fprintf(stderr, "reads: %s is too small\n", argv[1]);
        return 1;
    }
    off_t span = st.st_size - st.st_size % size;
    off_t off = 0;
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (unsigned long i = 0; i < count; i++) {
        ssize_t n = pread(fd, buf, size, off);
        if (n != (ssize_t)size) {
            perror("pread");
            return 1;
        }
        for (ssize_t k = 0; k < n; k++)
            h = (h ^ (unsigned char)buf[k]) * 1099511628211ULL;
        off += size;
        if (off >= span)
            off = 0;
    }
    close(fd);
    printf("%lu reads of %zu bytes, fnv1a %016llx\n", count, size, (unsigned long long)h);
    return 0;
}
