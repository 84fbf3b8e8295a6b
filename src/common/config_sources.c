/* Where configuration values come from: the YAML file (libyaml) and the
 * environment (three names per setting, and NAME_FILE for secrets). Each
 * value goes through crt_config_apply (config.c). */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <yaml.h>
#include "cronium/config.h"
#include "config_int.h"

static int read_secret_file(const char *path, char **out, crt_buf *err, const char *what)
{
    crt_buf b;
    crt_buf_init(&b);
    if (crt_file_read(path, 1u << 20, &b) == CRT_EIO) {
        crt_buf_printf(err, "%s: cannot read \"%s\": %s", what, path, strerror(errno));
        return CRT_EINVAL;
    }
    while (b.len && (b.data[b.len - 1] == '\n' || b.data[b.len - 1] == '\r'))
        b.len--;
    crt_buf_cstr(&b);
    *out = b.data ? b.data : strdup("");
    return 0;
}

/* ---- YAML -------------------------------------------------------------------- */

static const crt_config_opt *find_yaml(const char *section, const char *name, bool *is_file)
{
    *is_file = false;
    size_t nopts;
    const crt_config_opt *opts = crt_config_table(&nopts);
    for (size_t i = 0; i < nopts; i++) {
        const crt_config_opt *o = &opts[i];
        if (strcmp(o->section, section) != 0)
            continue;
        if (strcmp(o->name, name) == 0)
            return o;
        size_t n = strlen(o->name);
        if (o->type == CRT_CT_SECRET && strncmp(name, o->name, n) == 0 && strcmp(name + n, "File") == 0) {
            *is_file = true;
            return o;
        }
    }
    return NULL;
}

static int yaml_apply(crt_config *c, const char *section, const char *key, const char *raw, crt_buf *err)
{
    bool is_file;
    const crt_config_opt *o = find_yaml(section, key, &is_file);
    if (!o) {
        crt_buf_printf(err, "config file: unknown setting %s.%s", section, key);
        return CRT_EINVAL;
    }
    char where[160];
    snprintf(where, sizeof where, "config file %s.%s", section, key);
    crt_buf xerr;
    crt_buf_init(&xerr);
    char *val = crt_config_expand(raw, &xerr);
    if (!val) {
        crt_buf_printf(err, "%s: %s", where, crt_buf_cstr(&xerr));
        crt_buf_fini(&xerr);
        return CRT_EINVAL;
    }
    crt_buf_fini(&xerr);
    /* An error about an expanded value shows what the file says (${NAME}),
     * not what the environment put there: that may be a secret. */
    const char *shown = strstr(raw, "${") ? raw : val;
    int rc;
    if (is_file) {
        char *secret = NULL;
        rc = read_secret_file(val, &secret, err, where);
        if (rc == 0)
            rc = crt_config_apply(c, o, secret, NULL, where, err);
        free(secret);
    } else {
        rc = crt_config_apply(c, o, val, shown, where, err);
    }
    free(val);
    return rc;
}

int crt_config_load_yaml(crt_config *c, const char *text, size_t len, crt_buf *err)
{
    yaml_parser_t p;
    yaml_event_t ev;
    if (!yaml_parser_initialize(&p))
        return CRT_ENOMEM;
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);

    /* depth 1: root mapping (keys are sections); depth 2: a section's mapping. */
    int depth = 0, rc = 0;
    bool done = false, want_key = true;
    char section[64] = "", key[64] = "";
    crt_buf seq;            /* a sequence value is joined with commas */
    bool in_seq = false;
    crt_buf_init(&seq);

    while (!done && rc == 0) {
        if (!yaml_parser_parse(&p, &ev)) {
            crt_buf_printf(err, "config file: YAML error at line %zu: %s", p.problem_mark.line + 1,
                           p.problem ? p.problem : "syntax error");
            rc = CRT_EINVAL;
            break;
        }
        switch (ev.type) {
        case YAML_STREAM_END_EVENT:
            done = true;
            break;
        case YAML_MAPPING_START_EVENT:
            if (depth >= 2 || (depth == 1 && want_key)) {
                crt_buf_printf(err, "config file: unexpected nested mapping under %s.%s", section, key);
                rc = CRT_EINVAL;
            }
            depth++;
            want_key = true;
            break;
        case YAML_MAPPING_END_EVENT:
            depth--;
            want_key = true;
            break;
        case YAML_SEQUENCE_START_EVENT:
            if (depth != 2 || want_key || in_seq) {
                crt_buf_printf(err, "config file: unexpected list near %s", section);
                rc = CRT_EINVAL;
            }
            in_seq = true;
            crt_buf_reset(&seq);
            break;
        case YAML_SEQUENCE_END_EVENT:
            in_seq = false;
            rc = yaml_apply(c, section, key, crt_buf_cstr(&seq), err);
            want_key = true;
            break;
        case YAML_SCALAR_EVENT: {
            const char *v = (const char *)ev.data.scalar.value;
            if (in_seq) {
                if (seq.len)
                    crt_buf_putc(&seq, ',');
                crt_buf_puts(&seq, v);
            } else if (depth == 1) {
                if (!want_key) {
                    crt_buf_printf(err, "config file: section %s must be a mapping", section);
                    rc = CRT_EINVAL;
                }
                snprintf(section, sizeof section, "%s", v);
                want_key = false;
            } else if (depth == 2 && want_key) {
                snprintf(key, sizeof key, "%s", v);
                want_key = false;
            } else if (depth == 2) {
                rc = yaml_apply(c, section, key, v, err);
                want_key = true;
            } else if (depth == 0 && *v) {
                crt_buf_puts(err, "config file: the document must be a mapping of sections");
                rc = CRT_EINVAL;
            }
            break;
        }
        default:
            break;
        }
        yaml_event_delete(&ev);
    }
    crt_buf_fini(&seq);
    yaml_parser_delete(&p);
    return rc;
}

/* ---- environment ----------------------------------------------------------- */

static void snake_upper(const char *camel, char *out, size_t cap)
{
    size_t o = 0;
    for (const char *p = camel; *p && o + 2 < cap; p++) {
        if (isupper((unsigned char)*p) && p != camel)
            out[o++] = '_';
        out[o++] = (char)toupper((unsigned char)*p);
    }
    out[o] = '\0';
}

const char *crt_config_env_get(char *const *envp, const char *name)
{
    size_t n = strlen(name);
    for (char *const *e = envp; e && *e; e++)
        if (strncmp(*e, name, n) == 0 && (*e)[n] == '=')
            return *e + n + 1;
    return NULL;
}

int crt_config_load_env(crt_config *c, char *const *envp, crt_buf *err)
{
    size_t nopts;
    const crt_config_opt *opts = crt_config_table(&nopts);
    for (size_t i = 0; i < nopts; i++) {
        const crt_config_opt *o = &opts[i];
        char sec[64], nm[64], names[3][160];
        snake_upper(o->section, sec, sizeof sec);
        snake_upper(o->name, nm, sizeof nm);
        /* Increasing priority: the most specific name wins. */
        snprintf(names[0], sizeof names[0], "%s", o->env);
        snprintf(names[1], sizeof names[1], "RUNTIME_%s", o->env);
        snprintf(names[2], sizeof names[2], "RUNTIME_%s_%s", sec, nm);
        const char *val = NULL, *from = NULL;
        bool from_file = false;
        for (int k = 0; k < 3; k++) {
            const char *v = crt_config_env_get(envp, names[k]);
            if (v) {
                val = v;
                from = names[k];
                from_file = false;
            } else if (o->type == CRT_CT_SECRET) {
                char fname[512];
                snprintf(fname, sizeof fname, "%s_FILE", names[k]);
                if ((v = crt_config_env_get(envp, fname)) != NULL) {
                    val = v;
                    from = names[k];
                    from_file = true;
                }
            }
        }
        if (!val)
            continue;
        int rc;
        if (from_file) {
            char *secret = NULL, what[512];
            snprintf(what, sizeof what, "%s_FILE", from);
            rc = read_secret_file(val, &secret, err, what);
            if (rc == 0)
                rc = crt_config_apply(c, o, secret, NULL, what, err);
            free(secret);
        } else {
            rc = crt_config_apply(c, o, val, val, from, err);
        }
        if (rc)
            return rc;
    }
    return 0;
}
