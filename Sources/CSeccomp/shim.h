#ifndef ZTAP_CSECCOMP_SHIM_H
#define ZTAP_CSECCOMP_SHIM_H
#include <seccomp.h>
#endif
