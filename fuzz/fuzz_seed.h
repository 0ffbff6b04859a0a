/*
 * Copyright (C) ngx_llm developers
 *
 * What the seed programs of the fuzz targets (built with
 * -DLLM_*_SEED_MAIN) share: writing one corpus file.  Header-only.
 */

#ifndef FUZZ_SEED_H
#define FUZZ_SEED_H

#include <stdio.h>


/* writes a (alen bytes) then b (blen bytes, may be NULL) to path;
 * returns 0, or -1 after saying why on stderr */
static inline int
fuzz_seed_write(const char *path, const void *a, size_t alen, const void *b,
    size_t blen)
{
    FILE  *fp;

    fp = fopen(path, "wb");
    if (fp == NULL) {
        perror(path);
        return -1;
    }

    if ((alen > 0 && fwrite(a, 1, alen, fp) != alen)
        || (blen > 0 && fwrite(b, 1, blen, fp) != blen))
    {
        perror(path);
        fclose(fp);
        return -1;
    }

    if (fclose(fp) != 0) {
        perror(path);
        return -1;
    }

    return 0;
}


#endif /* FUZZ_SEED_H */
