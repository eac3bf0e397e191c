#ifndef ZTAP_CCAP_SHIM_H
#define ZTAP_CCAP_SHIM_H
#include <sys/capability.h>
#endif
