// What dist.c and hier.c share: an MPI call's error as one line.
#pragma once
#include <stddef.h>

// "NAME failed: MPI's reason" (errors come back only under an error handler that returns
// them; MPI's default ends the job); call is the call's text, its name what comes before '('
void mpi_error_text(char *out, size_t cap, const char *call, int code);
// sets that line as the error and returns MOE_FAIL
int mpi_fail(const char *call, int code);
#define MPI_TRY(call) do { int rc_ = (call); if (rc_ != MPI_SUCCESS) return mpi_fail(#call, rc_); } while (0)
