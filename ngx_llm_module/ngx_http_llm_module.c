
/*
 * Copyright (C) ngx_llm developers
 *
 * ngx_http_llm_module: serves the OpenAI API from a location by handing
 * each request to a co-located engine process through shared memory.
 *
 *     llm_engine         NAME unix:PATH;   http
 *     llm_pass           NAME;             location
 *     llm_model          VALUE;            http, server, location
 *     llm_max_tokens     N;                http, server, location
 *     llm_max_n          N;                http, server, location
 *     llm_timeout        TIME;             http, server, location
 *     llm_queue_timeout  TIME;             http, server, location
 *     llm_metrics;                         location
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_llm_module.h"


static ngx_int_t ngx_http_llm_preconfiguration(ngx_conf_t *cf);
static ngx_int_t ngx_http_llm_postconfiguration(ngx_conf_t *cf);
static void *ngx_http_llm_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_llm_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_llm_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_llm_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_llm_engine(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_llm_pass(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_llm_set_num(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_llm_set_msec(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_llm_init_process(ngx_cycle_t *cycle);
static void ngx_http_llm_exit_process(ngx_cycle_t *cycle);


static ngx_conf_num_bounds_t  ngx_http_llm_max_tokens_bounds = {
    NULL, 1, NGX_HTTP_LLM_MAX_TOKENS_MAX
};

static ngx_conf_num_bounds_t  ngx_http_llm_max_n_bounds = {
    NULL, 1, NGX_HTTP_LLM_MAX_N
};

/* the least time ngx_http_llm_set_msec() accepts */
static ngx_msec_t  ngx_http_llm_msec_min = 1;
static ngx_msec_t  ngx_http_llm_msec_zero = 0;


static ngx_command_t  ngx_http_llm_commands[] = {

    { ngx_string("llm_engine"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE2,
      ngx_http_llm_engine,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("llm_pass"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_llm_pass,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("llm_max_tokens"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_llm_set_num,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_llm_loc_conf_t, max_tokens),
      &ngx_http_llm_max_tokens_bounds },

    { ngx_string("llm_model"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_set_complex_value_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_llm_loc_conf_t, model),
      NULL },

    { ngx_string("llm_max_n"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_llm_set_num,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_llm_loc_conf_t, max_n),
      &ngx_http_llm_max_n_bounds },

    { ngx_string("llm_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_llm_set_msec,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_llm_loc_conf_t, timeout),
      &ngx_http_llm_msec_min },

    { ngx_string("llm_queue_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_llm_set_msec,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_llm_loc_conf_t, queue_timeout),
      &ngx_http_llm_msec_zero },

    { ngx_string("llm_metrics"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_llm_metrics,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_llm_module_ctx = {
    ngx_http_llm_preconfiguration,         /* preconfiguration */
    ngx_http_llm_postconfiguration,        /* postconfiguration */

    ngx_http_llm_create_main_conf,         /* create main configuration */
    ngx_http_llm_init_main_conf,           /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_llm_create_loc_conf,          /* create location configuration */
    ngx_http_llm_merge_loc_conf            /* merge location configuration */
};


ngx_module_t  ngx_http_llm_module = {
    NGX_MODULE_V1,
    &ngx_http_llm_module_ctx,              /* module context */
    ngx_http_llm_commands,                 /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_llm_init_process,             /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_llm_exit_process,             /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_int_t
ngx_http_llm_preconfiguration(ngx_conf_t *cf)
{
    return ngx_http_llm_add_variables(cf);
}


static ngx_int_t
ngx_http_llm_postconfiguration(ngx_conf_t *cf)
{
    if (ngx_http_llm_metrics_init(cf) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_llm_filter_init(cf);
}


static void *
ngx_http_llm_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_llm_main_conf_t  *lmcf;

    lmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_llm_main_conf_t));
    if (lmcf == NULL) {
        return NULL;
    }

    if (ngx_array_init(&lmcf->engines, cf->pool, 4,
                       sizeof(ngx_http_llm_engine_t *))
        != NGX_OK)
    {
        return NULL;
    }

    return lmcf;
}


/*
 * Every name llm_pass used must have been defined by llm_engine; where
 * engines are, the metrics zone is too.
 */

static char *
ngx_http_llm_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_llm_main_conf_t *lmcf = conf;

    ngx_uint_t               i;
    ngx_http_llm_engine_t  **engines;

    engines = lmcf->engines.elts;

    for (i = 0; i < lmcf->engines.nelts; i++) {
        if (!engines[i]->defined) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "unknown llm engine \"%V\" in %s:%ui",
                          &engines[i]->name, engines[i]->file,
                          engines[i]->line);
            return NGX_CONF_ERROR;
        }
    }

    if (lmcf->engines.nelts) {
        lmcf->metrics = ngx_http_llm_metrics_zone(cf);
        if (lmcf->metrics == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


static void *
ngx_http_llm_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_llm_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_llm_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->engine = NULL;
     *     conf->model = NULL;
     */

    conf->max_tokens = NGX_CONF_UNSET_UINT;
    conf->max_n = NGX_CONF_UNSET_UINT;
    conf->timeout = NGX_CONF_UNSET_MSEC;
    conf->queue_timeout = NGX_CONF_UNSET_MSEC;

    return conf;
}


static char *
ngx_http_llm_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_llm_loc_conf_t *prev = parent;
    ngx_http_llm_loc_conf_t *conf = child;

    /* conf->engine is not inherited, as the content handler is not */

    if (conf->model == NULL) {
        conf->model = prev->model;
    }

    ngx_conf_merge_uint_value(conf->max_tokens, prev->max_tokens, 256);
    ngx_conf_merge_uint_value(conf->max_n, prev->max_n, 8);
    ngx_conf_merge_msec_value(conf->timeout, prev->timeout, 60000);
    ngx_conf_merge_msec_value(conf->queue_timeout, prev->queue_timeout,
                              10000);

    return NGX_CONF_OK;
}


/*
 * Finds an engine by name or adds an undefined one: llm_pass may name an
 * engine that llm_engine defines further down.
 */

ngx_http_llm_engine_t *
ngx_http_llm_engine_add(ngx_conf_t *cf, ngx_str_t *name)
{
    ngx_uint_t                 i;
    ngx_http_llm_engine_t     *e, **ep;
    ngx_http_llm_main_conf_t  *lmcf;

    lmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_llm_module);

    ep = lmcf->engines.elts;

    for (i = 0; i < lmcf->engines.nelts; i++) {
        if (ep[i]->name.len == name->len
            && ngx_strncmp(ep[i]->name.data, name->data, name->len) == 0)
        {
            return ep[i];
        }
    }

    e = ngx_pcalloc(cf->pool, sizeof(ngx_http_llm_engine_t));
    if (e == NULL) {
        return NULL;
    }

    e->name = *name;
    e->file = cf->conf_file->file.name.data;
    e->line = cf->conf_file->line;

    ep = ngx_array_push(&lmcf->engines);
    if (ep == NULL) {
        return NULL;
    }

    *ep = e;

    return e;
}


/* llm_engine NAME unix:PATH; */

static char *
ngx_http_llm_engine(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    size_t                  len;
    u_char                 *p;
    ngx_str_t              *value;
    ngx_uint_t              i;
    ngx_http_llm_engine_t  *e;

    value = cf->args->elts;

    /* names label the metrics, which keep LLM_MODEL_NAME_MAX bytes */

    if (value[1].len == 0 || value[1].len >= LLM_MODEL_NAME_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid llm engine name \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    for (i = 0; i < value[1].len; i++) {
        p = &value[1].data[i];

        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')
              || (*p >= '0' && *p <= '9') || *p == '_' || *p == '-'
              || *p == '.'))
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid llm engine name \"%V\"", &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    e = ngx_http_llm_engine_add(cf, &value[1]);
    if (e == NULL) {
        return NGX_CONF_ERROR;
    }

    if (e->defined) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "duplicate llm engine \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    len = value[2].len - (sizeof("unix:") - 1);

    if (value[2].len <= sizeof("unix:") - 1
        || ngx_strncmp(value[2].data, "unix:", sizeof("unix:") - 1) != 0
        || len >= sizeof(e->sockaddr.sun_path)
        || ngx_strlchr(value[2].data, value[2].data + value[2].len, '\0'))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid llm engine address \"%V\", "
                           "expected \"unix:/path/to/socket\"", &value[2]);
        return NGX_CONF_ERROR;
    }

    e->path = value[2];

    e->sockaddr.sun_family = AF_UNIX;
    ngx_memcpy(e->sockaddr.sun_path, value[2].data + sizeof("unix:") - 1,
               len);
    e->sockaddr.sun_path[len] = '\0';
    e->socklen = offsetof(struct sockaddr_un, sun_path) + len + 1;

    e->defined = 1;

    return NGX_CONF_OK;
}


/* llm_pass NAME; */

static char *
ngx_http_llm_pass(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_llm_loc_conf_t *llcf = conf;

    ngx_str_t                 *value;
    ngx_http_core_loc_conf_t  *clcf;

    if (llcf->engine) {
        return "is duplicate";
    }

    value = cf->args->elts;

    llcf->engine = ngx_http_llm_engine_add(cf, &value[1]);
    if (llcf->engine == NULL) {
        return NGX_CONF_ERROR;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_llm_handler;

    return NGX_CONF_OK;
}


/* a number within cmd->post's bounds; errors quote the value */

static char *
ngx_http_llm_set_num(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    char  *p = conf;

    ngx_int_t               n;
    ngx_str_t              *value;
    ngx_uint_t             *np;
    ngx_conf_num_bounds_t  *bounds;

    np = (ngx_uint_t *) (p + cmd->offset);

    if (*np != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;
    bounds = cmd->post;

    n = ngx_atoi(value[1].data, value[1].len);

    if (n == NGX_ERROR || n < bounds->low || n > bounds->high) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid value \"%V\" in \"%V\" directive, "
                           "it must be a number from %i to %i",
                           &value[1], &cmd->name, bounds->low, bounds->high);
        return NGX_CONF_ERROR;
    }

    *np = (ngx_uint_t) n;

    return NGX_CONF_OK;
}


/* a time of at least *cmd->post milliseconds; errors quote the value */

static char *
ngx_http_llm_set_msec(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    char  *p = conf;

    ngx_int_t    n;
    ngx_str_t   *value;
    ngx_msec_t  *mp, *min;

    mp = (ngx_msec_t *) (p + cmd->offset);

    if (*mp != NGX_CONF_UNSET_MSEC) {
        return "is duplicate";
    }

    value = cf->args->elts;
    min = cmd->post;

    n = ngx_parse_time(&value[1], 0);

    if (n == NGX_ERROR || (ngx_msec_t) n < *min) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid value \"%V\" in \"%V\" directive, "
                           "it must be a time such as \"60s\"%s",
                           &value[1], &cmd->name,
                           *min ? "" : " or 0");
        return NGX_CONF_ERROR;
    }

    *mp = (ngx_msec_t) n;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_llm_init_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                 i;
    ngx_http_llm_engine_t    **engines;
    ngx_http_llm_main_conf_t  *lmcf;

    /* cache manager and loader processes serve no requests */

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    lmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_llm_module);
    if (lmcf == NULL) {
        return NGX_OK;
    }

    engines = lmcf->engines.elts;

    for (i = 0; i < lmcf->engines.nelts; i++) {
        if (ngx_http_llm_engine_init(engines[i], cycle->log) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static void
ngx_http_llm_exit_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                 i;
    ngx_http_llm_engine_t    **engines;
    ngx_http_llm_main_conf_t  *lmcf;

    lmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_llm_module);
    if (lmcf == NULL) {
        return;
    }

    engines = lmcf->engines.elts;

    for (i = 0; i < lmcf->engines.nelts; i++) {
        ngx_http_llm_engine_exit(engines[i]);
    }
}
