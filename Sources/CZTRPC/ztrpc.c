/* ztrpc.c - empty: CZTRPC exists only to export include/ztrpc.h to Swift (import CZTRPC). */
#include "ztrpc.h"
