/* Private to src/common/config*.c. */
#ifndef CRONIUM_CONFIG_INT_H
#define CRONIUM_CONFIG_INT_H

#include "cronium/config.h"

/* Sets one option from its text (config.c). Errors quote shown (the value as
 * the user wrote it; NULL: not quoted at all, e.g. a secret file's content)
 * and name source (a file's setting, an environment variable, "default"). */
int crt_config_apply(crt_config *c, const crt_config_opt *o, const char *val, const char *shown,
                     const char *source, crt_buf *err);
/* The value of the environment variable name in envp, or NULL
 * (config_sources.c). */
const char *crt_config_env_get(char *const *envp, const char *name);

#endif
