/* A stand-in for one CUDA library: exports the version function its real counterpart
 * exports, chosen at compile time, so the doctor can ask it its version the same way.
 *
 *   -DSIZE_T_VERSION=cudnnGetVersion -DVERSION_VALUE=90100       size_t f(void)
 *   -DINT_OUT_VERSION=cudaRuntimeGetVersion -DVERSION_VALUE=...  int f(int *)
 *   -DTWO_OUT_VERSION=nvJitLinkVersion -DVERSION_MAJOR=12 ...    int f(int *, int *)
 *   -DPROPERTY_VERSION=cusparseGetProperty -DVERSION_MAJOR=...   int f(int, int *)
 *   -DEXPORTED_SYMBOL=__nvJitLinkComplete_12_4                   an extra exported function
 *   -DUSED_SYMBOL=__nvJitLinkComplete_12_4                       a function it calls
 *   -DCONSTRUCTOR_ABORTS / -DCONSTRUCTOR_HANGS                    a constructor that misbehaves
 *   -DCONSTRUCTOR_FORKS   a constructor that forks a child which keeps the loading process's
 *                         stdout open and sleeps 40 s (its pid appended to the file named
 *                         by TORCH_DOCTOR_FORK_PIDFILE)
 */
#include <stddef.h>
#include <stdlib.h>
#include <unistd.h>

#ifdef SIZE_T_VERSION
size_t SIZE_T_VERSION(void) { return VERSION_VALUE; }
#endif

#ifdef INT_OUT_VERSION
int INT_OUT_VERSION(int *out) { *out = VERSION_VALUE; return 0; }
#endif

#ifdef TWO_OUT_VERSION
int TWO_OUT_VERSION(int *major, int *minor) {
    *major = VERSION_MAJOR;
    *minor = VERSION_MINOR;
    return 0;
}
#endif

#ifdef PROPERTY_VERSION
int PROPERTY_VERSION(int type, int *value) {
    static const int parts[3] = {VERSION_MAJOR, VERSION_MINOR, VERSION_PATCH};
    if (type < 0 || type > 2) return 1;
    *value = parts[type];
    return 0;
}
#endif

#ifdef EXPORTED_SYMBOL
int EXPORTED_SYMBOL(void) { return 0; }
#endif

#ifdef USED_SYMBOL
extern int USED_SYMBOL(void);
int stand_in_uses_symbol(void) { return USED_SYMBOL(); }
#endif

#ifdef CONSTRUCTOR_ABORTS
__attribute__((constructor)) static void stand_in_abort(void) { abort(); }
#endif

#ifdef CONSTRUCTOR_HANGS
__attribute__((constructor)) static void stand_in_hang(void) {
    for (;;) sleep(60);
}
#endif

#ifdef CONSTRUCTOR_FORKS
#include <stdio.h>
__attribute__((constructor)) static void stand_in_fork(void) {
    if (fork() != 0) return;
    const char *path = getenv("TORCH_DOCTOR_FORK_PIDFILE");
    FILE *file = path ? fopen(path, "a") : NULL;
    if (file) {
        fprintf(file, "%d\n", (int)getpid());
        fclose(file);
    }
    sleep(40);
    _exit(0);
}
#endif

int stand_in_marker(void) { return 1; }
