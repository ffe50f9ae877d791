/* A stand-in for libcuda.so.1 at its C ABI: cuInit, cuDriverGetVersion, cuDeviceGetCount,
 * cuGetErrorName, cuGetErrorString. It answers from the scenario in stub_config.h and
 * honours CUDA_VISIBLE_DEVICES as the real driver does (it stops at the first entry that
 * names no device). Build:
 *   cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o libcuda.so.1 cuda_stub.c
 */
#include <ctype.h>

#include "stub_config.h"

typedef int CUresult;

static int initialised;
static int visible;

struct cu_error {
    int code;
    const char *name;
    const char *text;
};

/* Names and texts as the CUDA driver reports them (cuda.h CUresult). */
static const struct cu_error errors[] = {
    {0, "CUDA_SUCCESS", "no error"},
    {1, "CUDA_ERROR_INVALID_VALUE", "invalid argument"},
    {3, "CUDA_ERROR_NOT_INITIALIZED", "initialization error"},
    {34, "CUDA_ERROR_STUB_LIBRARY", "CUDA driver is a stub library"},
    {35, "CUDA_ERROR_INSUFFICIENT_DRIVER", "CUDA driver version is insufficient for CUDA runtime version"},
    {100, "CUDA_ERROR_NO_DEVICE", "no CUDA-capable device is detected"},
    {101, "CUDA_ERROR_INVALID_DEVICE", "invalid device ordinal"},
    {802, "CUDA_ERROR_SYSTEM_NOT_READY", "system not yet initialized"},
    {803, "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH", "system has unsupported display driver / cuda driver combination"},
    {804, "CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE", "forward compatibility was attempted on non supported HW"},
    {999, "CUDA_ERROR_UNKNOWN", "unknown error"},
};

static const struct cu_error *find_error(CUresult code) {
    for (size_t i = 0; i < sizeof errors / sizeof errors[0]; i++)
        if (errors[i].code == code) return &errors[i];
    return NULL;
}

static int names_device(const char *entry) {
    if (isdigit((unsigned char)entry[0])) {
        char *end;
        long index = strtol(entry, &end, 10);
        return *end == '\0' && index < stub.gpu_count;
    }
    if (!strncmp(entry, "GPU-", 4) || !strncmp(entry, "MIG-", 4)) {
        for (int i = 0; i < stub.gpu_count; i++)
            if (!strncmp(stub.gpus[i].uuid, entry, strlen(entry))) return 1;
    }
    return 0;
}

static int count_visible(void) {
    const char *setting = getenv("CUDA_VISIBLE_DEVICES");
    if (!setting) return stub.gpu_count;
    char buffer[512];
    stub_copy(buffer, sizeof buffer, setting);
    int count = 0;
    for (char *entry = strtok(buffer, ","); entry; entry = strtok(NULL, ",")) {
        while (*entry == ' ') entry++;
        if (!names_device(entry)) break;
        count++;
    }
    return count;
}

CUresult cuInit(unsigned int flags) {
    (void)flags;
    stub_load();
    if (stub.cu_init_crash) abort();
    if (stub.cu_init_error) return stub.cu_init_error;
    visible = count_visible();
    if (visible == 0) return 100; /* CUDA_ERROR_NO_DEVICE */
    initialised = 1;
    return 0;
}

CUresult cuDriverGetVersion(int *version) {
    stub_load();
    if (!version) return 1;
    *version = stub.cuda_version;
    return 0;
}

CUresult cuDeviceGetCount(int *count) {
    if (!initialised) return 3;
    if (!count) return 1;
    *count = visible;
    return 0;
}

CUresult cuGetErrorName(CUresult error, const char **name) {
    const struct cu_error *found = find_error(error);
    if (!found || !name) return 1;
    *name = found->name;
    return 0;
}

CUresult cuGetErrorString(CUresult error, const char **text) {
    const struct cu_error *found = find_error(error);
    if (!found || !text) return 1;
    *text = found->text;
    return 0;
}
