import createClient from "openapi-fetch";
import type { components, paths } from "./schema";

type Role = components["schemas"]["Role"];

// `getToken` is Clerk's (useAuth() in React): the signed-in admin's session token.
export function adminApi(baseUrl: string, getToken: () => Promise<string | null>) {
  const api = createClient<paths>({ baseUrl });
  api.use({
    async onRequest({ request }) {
      request.headers.set("Authorization", `Bearer ${await getToken()}`);
      return request;
    },
  });
  return {
    async setRole(userId: string, role: Role) {
      const { data, error } = await api.PATCH("/api/admin/users/{userId}", {
        params: { path: { userId } },
        body: { role },
      });
      if (error?.type === "/problems/last-admin") throw new Error("Promote another admin first");
      if (error) throw new Error(error.detail);
      return data; // data.sync.state: "pending" until Clerk has the role
    },
    stats: () => api.GET("/api/admin/stats"),
  };
}
