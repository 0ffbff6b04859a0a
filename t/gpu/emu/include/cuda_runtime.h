/* Copyright (C) ngx_llm developers: the emulator's runtime, one header */
#include "cuda_runtime_api.h"
