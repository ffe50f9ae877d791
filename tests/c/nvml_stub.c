/* A stand-in for libnvidia-ml.so.1 at its C ABI, for tests on machines without a GPU.
 * It implements the NVML entry points nvidia-ml-py calls in doctor/probe/nvml_child.py
 * and answers from the scenario in stub_config.h. Build:
 *   cc -shared -fPIC -Wl,-soname,libnvidia-ml.so.1 -o libnvidia-ml.so.1 nvml_stub.c
 */
#include <sys/wait.h>
#include <unistd.h>

#include "stub_config.h"

typedef int nvmlReturn_t;
typedef struct stub_gpu *nvmlDevice_t;

enum {
    NVML_SUCCESS = 0,
    NVML_ERROR_UNINITIALIZED = 1,
    NVML_ERROR_INVALID_ARGUMENT = 2,
    NVML_ERROR_NOT_SUPPORTED = 3,
    NVML_ERROR_NO_PERMISSION = 4,
    NVML_ERROR_INSUFFICIENT_SIZE = 7,
    NVML_ERROR_DRIVER_NOT_LOADED = 9,
    NVML_ERROR_LIBRARY_NOT_FOUND = 12,
    NVML_ERROR_FUNCTION_NOT_FOUND = 13,
    NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18,
    NVML_ERROR_UNKNOWN = 999,
};

typedef struct {
    unsigned long long total, free, used;
} nvmlMemory_t;

typedef struct {
    char busIdLegacy[16];
    unsigned int domain, bus, device, pciDeviceId, pciSubSystemId;
    char busId[32];
} nvmlPciInfo_t;

static int initialised;

static void fork_daemon(void) {
    /* A driver that leaves a process behind: detached, holding the caller's stdout. */
    pid_t pid = fork();
    if (pid != 0) {
        if (pid > 0) waitpid(pid, NULL, 0);
        return;
    }
    setsid();
    if (fork() != 0) _exit(0);
    if (stub.nvml_fork_pidfile[0]) {
        FILE *file = fopen(stub.nvml_fork_pidfile, "w");
        if (file) {
            fprintf(file, "%d\n", (int)getpid());
            fclose(file);
        }
    }
    sleep((unsigned int)stub.nvml_init_fork);
    _exit(0);
}

static void print_garbage(void) {
    /* Straight to the file descriptor, as a driver's own debug output would go. */
    char chunk[4096];
    memset(chunk, '[', sizeof chunk);
    for (int left = stub.nvml_init_print; left > 0; left -= (int)sizeof chunk) {
        size_t size = left < (int)sizeof chunk ? (size_t)left : sizeof chunk;
        if (write(1, chunk, size) < 0) return;
    }
    if (write(1, "\n", 1) < 0) return;
}

static nvmlReturn_t init(void) {
    stub_load();
    if (stub.nvml_init_print) print_garbage();
    if (stub.nvml_init_fork) fork_daemon();
    if (stub.nvml_init_sleep) sleep((unsigned int)stub.nvml_init_sleep);
    if (stub.nvml_init_error) return stub.nvml_init_error;
    initialised = 1;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlInit_v2(void) { return init(); }
nvmlReturn_t nvmlInit(void) { return init(); }
nvmlReturn_t nvmlInitWithFlags(unsigned int flags) { (void)flags; return init(); }

nvmlReturn_t nvmlShutdown(void) {
    if (!initialised) return NVML_ERROR_UNINITIALIZED;
    initialised = 0;
    return NVML_SUCCESS;
}

const char *nvmlErrorString(nvmlReturn_t result) {
    switch (result) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_NO_PERMISSION: return "Insufficient Permissions";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    case NVML_ERROR_LIBRARY_NOT_FOUND: return "NVML Shared Library Not Found";
    case NVML_ERROR_LIB_RM_VERSION_MISMATCH: return "Driver/library version mismatch";
    case NVML_ERROR_FUNCTION_NOT_FOUND: return "Function Not Found";
    default: return "Unknown Error";
    }
}

static nvmlReturn_t copy_out(char *dst, unsigned int length, const char *src) {
    if (!initialised) return NVML_ERROR_UNINITIALIZED;
    if (!dst) return NVML_ERROR_INVALID_ARGUMENT;
    if (strlen(src) + 1 > length) return NVML_ERROR_INSUFFICIENT_SIZE;
    strcpy(dst, src);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    return copy_out(version, length, stub.driver_version);
}

nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *version) {
    if (!initialised) return NVML_ERROR_UNINITIALIZED;
    *version = stub.cuda_version;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *version) {
    return nvmlSystemGetCudaDriverVersion_v2(version);
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
    if (!initialised) return NVML_ERROR_UNINITIALIZED;
    *count = (unsigned int)stub.gpu_count;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    if (!initialised) return NVML_ERROR_UNINITIALIZED;
    if (index >= (unsigned int)stub.gpu_count || !device) return NVML_ERROR_INVALID_ARGUMENT;
    *device = &stub.gpus[index];
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length) {
    if (!device) return NVML_ERROR_INVALID_ARGUMENT;
    return copy_out(name, length, device->name);
}

nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length) {
    if (!device) return NVML_ERROR_INVALID_ARGUMENT;
    return copy_out(uuid, length, device->uuid);
}

nvmlReturn_t nvmlDeviceGetCudaComputeCapability(nvmlDevice_t device, int *major, int *minor) {
    if (!initialised) return NVML_ERROR_UNINITIALIZED;
    if (!device || !major || !minor) return NVML_ERROR_INVALID_ARGUMENT;
    *major = device->cc_major;
    *minor = device->cc_minor;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory) {
    if (!initialised) return NVML_ERROR_UNINITIALIZED;
    if (!device || !memory) return NVML_ERROR_INVALID_ARGUMENT;
    memory->total = device->memory_bytes;
    memory->used = device->memory_bytes / 100;
    memory->free = memory->total - memory->used;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t device, unsigned int *current, unsigned int *pending) {
    if (!initialised) return NVML_ERROR_UNINITIALIZED;
    if (!device || !current || !pending) return NVML_ERROR_INVALID_ARGUMENT;
    if (device->mig < 0) return NVML_ERROR_NOT_SUPPORTED;
    *current = *pending = (unsigned int)device->mig;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t device, nvmlPciInfo_t *pci) {
    if (!initialised) return NVML_ERROR_UNINITIALIZED;
    if (!device || !pci) return NVML_ERROR_INVALID_ARGUMENT;
    memset(pci, 0, sizeof *pci);
    stub_copy(pci->busId, sizeof pci->busId, device->bus_id);
    stub_copy(pci->busIdLegacy, sizeof pci->busIdLegacy, device->bus_id);
    pci->bus = (unsigned int)(device - stub.gpus) + 1;
    pci->pciDeviceId = 0x10de;
    return NVML_SUCCESS;
}

/* The NVSwitch fabric state (nvml.h nvmlGpuFabricInfo_t and its versioned v2). */
typedef struct {
    unsigned char clusterUuid[16];
    nvmlReturn_t status;
    unsigned int cliqueId;
    unsigned int state;
} nvmlGpuFabricInfo_t;

typedef struct {
    unsigned int version;
    unsigned char clusterUuid[16];
    nvmlReturn_t status;
    unsigned int cliqueId;
    unsigned int state;
    unsigned int healthMask;
} nvmlGpuFabricInfoV_t;

static nvmlReturn_t fabric_of(nvmlDevice_t device, nvmlReturn_t *status, unsigned int *state) {
    if (!initialised) return NVML_ERROR_UNINITIALIZED;
    if (!device) return NVML_ERROR_INVALID_ARGUMENT;
    if (device->fabric_state == 0) return NVML_ERROR_NOT_SUPPORTED;
    *status = device->fabric_status;
    *state = (unsigned int)device->fabric_state;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetGpuFabricInfo(nvmlDevice_t device, nvmlGpuFabricInfo_t *info) {
    if (!info) return NVML_ERROR_INVALID_ARGUMENT;
    memset(info, 0, sizeof *info);
    return fabric_of(device, &info->status, &info->state);
}

nvmlReturn_t nvmlDeviceGetGpuFabricInfoV(nvmlDevice_t device, nvmlGpuFabricInfoV_t *info) {
    if (stub.fabric_v_missing) return NVML_ERROR_FUNCTION_NOT_FOUND;
    if (!info) return NVML_ERROR_INVALID_ARGUMENT;
    unsigned int version = info->version;
    memset(info, 0, sizeof *info);
    info->version = version;
    return fabric_of(device, &info->status, &info->state);
}

nvmlReturn_t nvmlDeviceGetP2PStatus(nvmlDevice_t a, nvmlDevice_t b, int index, int *status) {
    if (!initialised) return NVML_ERROR_UNINITIALIZED;
    if (!a || !b || !status || index < 0) return NVML_ERROR_INVALID_ARGUMENT;
    *status = stub.p2p[a - stub.gpus][b - stub.gpus];
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetTopologyCommonAncestor(nvmlDevice_t a, nvmlDevice_t b, int *level) {
    if (!initialised) return NVML_ERROR_UNINITIALIZED;
    if (!a || !b || !level) return NVML_ERROR_INVALID_ARGUMENT;
    int stored = stub.topology[a - stub.gpus][b - stub.gpus];
    *level = stored ? stored - 1 : 10;
    return NVML_SUCCESS;
}
