// The gateway's users and groups as the sharing forms need them: lists (admins may read them;
// anyone else gets 403 and an empty list), an email turned into a user id, an id shown as the
// person's email. One place, so the members tab, file access and admin page agree.
import { getJson, kbPath } from "./api";
import type { User } from "./session";

export interface Group {
  name: string;
  display_name: string;
  members?: Array<string | { id: string }>;
}

/** List routes answer {"data": [...]} (the gateway's convention) or {"<name>": [...]}. */
export function listOf<T>(body: unknown, name: string): T[] {
  const record = (body ?? {}) as Record<string, unknown>;
  const list = record.data ?? record[name];
  return Array.isArray(list) ? (list as T[]) : [];
}

export async function listUsers(): Promise<User[]> {
  return listOf<User>(await getJson<unknown>("/v1/users"), "users");
}

export async function listGroups(): Promise<Group[]> {
  return listOf<Group>(await getJson<unknown>("/v1/groups"), "groups");
}

/** Users when this person may list them (admins); an empty list otherwise. */
export async function knownUsers(): Promise<User[]> {
  try {
    return await listUsers();
  } catch {
    return [];
  }
}

/**
 * People to show by email around a knowledge base: every user for admins; for its owners, the
 * people among its members (GET .../members names them); nobody for anyone else, who sees ids.
 */
export async function knownPeople(kb: string): Promise<User[]> {
  const users = await knownUsers();
  if (users.length) return users;
  try {
    const body = await getJson<{ members: Array<{ kind: string; id: string; name: string }> }>(`${kbPath(kb)}/members`);
    return (body.members ?? [])
      .filter((member) => member.kind === "user")
      .map((member) => ({ id: member.id, email: member.name, display_name: member.name, admin: false, groups: [], disabled: false, sso: false }));
  } catch {
    return [];
  }
}

export async function knownGroups(): Promise<Group[]> {
  try {
    return await listGroups();
  } catch {
    return [];
  }
}

/**
 * The id to send for what someone typed: a known user's id for their email, else the text as
 * typed (a user id, or an email the gateway resolves itself).
 */
export function userIdFor(typed: string, users: User[]): string {
  const text = typed.trim();
  const wanted = text.toLowerCase();
  return users.find((user) => user.email.toLowerCase() === wanted || user.id === text)?.id ?? text;
}

/** A user id shown as "Name <email>" when the user is known. */
export function userLabel(id: string, users: User[]): string {
  const user = users.find((candidate) => candidate.id === id);
  if (!user) return id;
  return user.display_name && user.display_name !== user.email ? `${user.display_name} <${user.email}>` : user.email;
}

/** Members of a group: from the group's own list when the gateway gives one, else from users. */
export function groupMembers(group: Group, users: User[]): string[] {
  if (Array.isArray(group.members)) return group.members.map((member) => (typeof member === "string" ? member : member.id));
  return users.filter((user) => (user.groups ?? []).includes(group.name)).map((user) => user.id);
}
