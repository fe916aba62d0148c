/*
 * Test fixture for tests/tests/host_wine.rs, never shipped: Rust's standard
 * library on Windows imports ProcessPrng from bcryptprimitives.dll, which
 * Debian 12's Wine 8.0 does not have (the program stops with c0000135).
 * This DLL provides it through RtlGenRandom (advapi32 SystemFunction036)
 * and is put into the test's own Wine prefix only.
 */
#include <windows.h>
#define SystemFunction036 NTAPI SystemFunction036
#include <ntsecapi.h>
#undef SystemFunction036

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG n = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (!RtlGenRandom(data, n))
            return FALSE;
        data += n;
        len -= n;
    }
    return TRUE;
}
